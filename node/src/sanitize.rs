//! Make received text safe to print on a terminal: no control characters,
//! no ANSI escape sequences, no bidirectional overrides (which can make a
//! message display as something it is not).

/// Whether `c` may reach a terminal as is.
fn printable(c: char) -> bool {
    if c == '\n' || c == '\t' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    !matches!(
        c,
        // Bidi embeddings, overrides and isolates; marks.
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        // Zero-width and invisible formatting that can hide text.
        | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        // Line and paragraph separators (treated as newlines by some terminals).
        | '\u{2028}' | '\u{2029}'
    )
}

/// `text` with everything unsafe removed and newlines kept (each shown
/// indented by the caller if it wants).
pub fn for_terminal(text: &str) -> String {
    text.chars().filter(|&c| printable(c)).collect()
}

/// One line: like [`for_terminal`], with newlines and tabs as spaces.
pub fn one_line(text: &str) -> String {
    for_terminal(text).chars().map(|c| if c == '\n' || c == '\t' { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_controls_and_bidi() {
        assert_eq!(for_terminal("hi\u{1b}[31mred\u{1b}[0m"), "hi[31mred[0m");
        assert_eq!(for_terminal("a\u{7}b\u{0}c\rd"), "abcd");
        assert_eq!(for_terminal("pay \u{202E}gnp.exe"), "pay gnp.exe");
        assert_eq!(for_terminal("x\u{2066}y\u{2069}z\u{200B}"), "xyz");
        assert_eq!(for_terminal("caf\u{e9} \u{1F600}\nnext"), "caf\u{e9} \u{1F600}\nnext");
        assert_eq!(one_line("a\nb\tc\u{9b}d"), "a b cd");
    }
}
