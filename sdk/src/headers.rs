//! The header block of the contract: one `name: value` line per header, joined by `\n`.

/// The `(name, value)` pairs of a header block.
pub fn header_lines(block: &str) -> impl Iterator<Item = (&str, &str)> {
    block
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// The first value of header `name` in a header block (names compare case-insensitively).
pub fn find_header<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    header_lines(block)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Appends one header to a header block.
pub fn push_header(block: &mut String, name: &str, value: &str) {
    if !block.is_empty() {
        block.push('\n');
    }
    block.push_str(&name.to_ascii_lowercase());
    block.push_str(": ");
    block.push_str(value);
}
