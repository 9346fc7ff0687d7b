//! Escaping for the formats the reports are written in.
//!
//! Every name in a report comes from an experiment file, so any of them
//! may hold `<`, `&`, `|` or a control character. XML and HTML get the five
//! predefined entities and lose the characters XML 1.0 forbids (a JUnit
//! file with one of them does not parse at all); Markdown gets backslash
//! escapes so a name cannot open a table column, a link or an HTML tag.

/// Whether XML 1.0 allows `c` in a document.
fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || c >= '\u{10000}'
}

/// Text content for XML or HTML: `& < > " '` as entities, forbidden
/// characters dropped.
pub(crate) fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| xml_allowed(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An attribute value (to go between double quotes): as [`xml_text`], and
/// tabs and line breaks as character references, which a parser would
/// otherwise normalise to spaces.
pub(crate) fn xml_attr(s: &str) -> String {
    xml_text(s)
        .replace('\t', "&#9;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
}

/// HTML text or attribute value. `&apos;` is HTML5 but not HTML4, so the
/// apostrophe is written numerically.
pub(crate) fn html(s: &str) -> String {
    xml_text(s).replace("&apos;", "&#39;")
}

/// Markdown inline text (prose or a table cell): the characters that
/// could start emphasis, code, a link, an HTML tag or an entity, or end a
/// table cell, are backslash-escaped; line breaks become spaces.
pub(crate) fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Inline code in Markdown, safe inside a table cell: the fence is longer
/// than any backtick run in `s`, and `|` is escaped (GFM reads `\|` as a
/// pipe even in code).
pub(crate) fn md_code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", s.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_and_strips() {
        assert_eq!(
            xml_text("a<b>&\"c\"'d'\u{0}\u{1}\u{FFFE}\u{1F600}"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;\u{1F600}"
        );
        assert_eq!(xml_attr("a\nb\tc"), "a&#10;b&#9;c");
        assert_eq!(html("it's"), "it&#39;s");
    }

    #[test]
    fn markdown_escapes() {
        assert_eq!(md("a|b *c* <d>\nx"), r"a\|b \*c\* \<d\> x");
        assert_eq!(md_code("a|b"), r"`a\|b`");
        assert_eq!(md_code("x `y` z"), "``x `y` z``");
        assert_eq!(md_code("`y`"), "`` `y` ``");
    }
}
