//! A small module with holes for `diffill fill examples/holes.rs`: the fill marker and
//! the `todo!()` bodies are filled one after another, each seeing the fills before it.

/// The largest value of a slice, or None when it is empty.
pub fn max_of(values: &[i64]) -> Option<i64> {
    todo!()
}

/// Sum of the squares of 1..=n.
pub fn sum_of_squares(n: u64) -> u64 {
    (1..=n).map(|k| <|fill|>).sum()
}

/// Whether `s` reads the same backwards.
pub fn is_palindrome(s: &str) -> bool {
    unimplemented!()
}

fn main() {
    println!("{:?} {} {}", max_of(&[3, 9, 2]), sum_of_squares(4), is_palindrome("level"));
}
