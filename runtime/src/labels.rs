//! Label text for the Prometheus exposition formats, escaped in one place.

/// Appends `value` escaped for a quoted label value: backslash, double quote and newline
/// become `\\`, `\"` and `\n` (the only escapes the text and OpenMetrics formats define).
#[inline]
pub fn escape_label_value(value: &str, out: &mut String) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` (the value escaped), preceded by a comma unless `out` is empty, so
/// that a label set is built by calling this once per label.
#[inline]
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(value, out);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_copied_unchanged() {
        let mut out = String::new();
        escape_label_value("GET /metrics é", &mut out);
        assert_eq!(out, "GET /metrics é");
    }

    #[test]
    fn backslash_quote_and_newline_are_escaped() {
        let mut out = String::new();
        escape_label_value("a\\b\"c\nd", &mut out);
        assert_eq!(out, r#"a\\b\"c\nd"#);
    }

    #[test]
    fn a_label_set_is_comma_separated() {
        let mut out = String::new();
        push_label(&mut out, "api", "push");
        push_label(&mut out, "reason", "bad \"body\"");
        assert_eq!(out, r#"api="push",reason="bad \"body\"""#);
    }

    /// Reading the escaped text back (as a scraper does) gives the original value, whatever
    /// the input.
    #[test]
    fn escaping_round_trips_for_awkward_inputs() {
        let inputs = [
            "",
            "\\",
            "\"",
            "\n",
            "\\n",
            "\\\"",
            "\"\"\n\\",
            "ü\u{0}\r\t",
            "a=\"b\",c=\"d\"",
            "}{",
        ];
        for input in inputs {
            let mut out = String::new();
            escape_label_value(input, &mut out);
            assert!(!out.contains('\n'), "{out:?} holds a raw newline");
            assert_eq!(unescape(&out), input, "escaped as {out:?}");
        }
    }

    fn unescape(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                assert_ne!(c, '"', "unescaped quote in {text:?}");
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                other => panic!("bad escape {other:?} in {text:?}"),
            }
        }
        out
    }
}
