//! Shared by the conformance tests: reading SPEC §9's vectors.

/// The bytes of field `name` in section `## section...` of the vectors text (hex, continuation lines
/// included).
pub fn vector(text: &str, section: &str, name: &str) -> Vec<u8> {
    let start = text.find(&format!("## {section}")).expect("section");
    let rest = &text[start..];
    let at = rest.find(&format!("\n{name} ")).expect("field") + 1;
    let mut hexs = String::new();
    for (i, line) in rest[at..].lines().enumerate() {
        if i > 0 && !line.starts_with(' ') {
            break;
        }
        hexs.push_str(line.trim_start_matches(name).trim());
    }
    hex::decode(hexs).expect("hex")
}
