// A small module with holes for `diffill fill examples/holes.ts`: the fill markers and the
// `throw new Error("TODO")` body are filled one after another, each seeing the fills before it.

/** The arithmetic mean of a non-empty array. */
export function mean(values: number[]): number {
  return <|fill|>;
}

/** How often each whitespace-separated word occurs in `text`. */
export function wordCounts(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const word of text.split(/\s+/).filter((w) => w.length > 0)) {
    <|fill|>
  }
  return counts;
}

/** Whether `s` reads the same backwards. */
export function isPalindrome(s: string): boolean {
  throw new Error("TODO");
}

console.log(mean([1, 2, 3]), wordCounts("a b a"), isPalindrome("level"));
