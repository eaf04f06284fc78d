//! Small text helpers shared by the tokenizers.

/// Whitespace as understood by Python's `str.split()` / `str.strip()`: the Unicode
/// `White_Space` characters plus the ASCII separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Splits on runs of [`is_py_space`] characters, dropping empty pieces.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace() {
        assert!(is_py_space('\u{1f}'));
        assert!(is_py_space('\u{3000}'));
        assert!(!is_py_space('\u{200b}'));
        let parts: Vec<&str> = py_split("  a\u{1c}b\u{a0} c\n").collect();
        assert_eq!(parts, ["a", "b", "c"]);
    }
}
