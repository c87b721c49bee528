// A small module with holes for `diffill fill examples/holes.js`: the fill markers and the
// `throw new Error("TODO")` body are filled one after another, each seeing the fills before it.

/** The arithmetic mean of a non-empty array. */
function mean(values) {
  return <|fill|>;
}

/** How often each whitespace-separated word occurs in `text`. */
function wordCounts(text) {
  const counts = {};
  for (const word of text.split(/\s+/).filter(Boolean)) {
    <|fill|>
  }
  return counts;
}

/** Whether `s` reads the same backwards. */
function isPalindrome(s) {
  throw new Error("TODO");
}

console.log(mean([1, 2, 3]), wordCounts("a b a"), isPalindrome("level"));
