//! Text into HTML reports.

/// `text` with the characters HTML gives a meaning escaped, for element text and quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
