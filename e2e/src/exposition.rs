//! Checks that an exposition body is valid, with the tools the people who scrape us use:
//! Prometheus' own `promtool check metrics` (Debian package `prometheus`) and client_python's
//! parsers (PyPI `prometheus_client`), plus the invariants neither of them checks (no series
//! twice, no family twice).
//!
//! Every render in the integration tests goes through [`assert_valid_exposition`], so an
//! output that a scraper would reject fails the test that produced it.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// client_python's parser for the format, failing (non-zero exit, reason on stderr) on any
/// parse error, on a family name seen twice and on a sample (name and label set) seen twice.
const PYTHON_CHECK: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as text_parse
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
body = sys.stdin.buffer.read().decode("utf-8")
parse = om_parse if sys.argv[1] == "openmetrics" else text_parse
families = set()
samples = set()
for family in parse(body):
    if family.name in families:
        sys.exit("family %s appears twice" % family.name)
    families.add(family.name)
    for s in family.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        if key in samples:
            sys.exit("sample %s%s appears twice" % key)
        samples.add(key)
print("ok")
"#;

/// Fails the test unless `body` is a valid exposition in text 0.0.4 (`openmetrics == false`)
/// or OpenMetrics 1.0: promtool parses it (lint findings such as a missing HELP are not
/// invalidity and are ignored), client_python's parser for the format reads it, and no
/// family, series or label within a series appears twice.
///
/// promtool 2.42 (Debian 12) reads text 0.0.4 only: for an OpenMetrics body it is given the
/// same text with `# TYPE x unknown` written as `untyped` (the one OpenMetrics type word
/// the sidecar writes that 0.0.4 lacks); `# UNIT` and `# EOF` are comments to it. The
/// OpenMetrics grammar itself is checked by client_python's OpenMetrics parser.
#[track_caller]
pub fn assert_valid_exposition(body: &[u8], openmetrics: bool) {
    if let Err(e) = check_exposition(body, openmetrics) {
        panic!(
            "invalid {} exposition: {e}\n--- body ---\n{}",
            if openmetrics {
                "OpenMetrics"
            } else {
                "text 0.0.4"
            },
            String::from_utf8_lossy(body)
        );
    }
}

/// [`assert_valid_exposition`] as a `Result`, for tests that expect invalidity.
pub fn check_exposition(body: &[u8], openmetrics: bool) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    check_structure(text, openmetrics)?;
    let for_promtool = if openmetrics {
        text.lines()
            .map(|l| match l.strip_suffix(" unknown") {
                Some(head) if l.starts_with("# TYPE ") => format!("{head} untyped\n"),
                _ if l.starts_with("# HELP ") => format!("{}\n", help_for_text(l)),
                _ => format!("{l}\n"),
            })
            .collect::<String>()
    } else {
        text.to_string()
    };
    promtool(for_promtool.as_bytes())?;
    client_python(body, openmetrics)
}

/// An OpenMetrics `# HELP` line with the escapes text 0.0.4 knows: OpenMetrics escapes `"`
/// as `\"` in HELP, 0.0.4 only `\\` and `\n` (promtool refuses `\"` there).
fn help_for_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some(n) => {
                out.push('\\');
                out.push(n);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `promtool check metrics`: exit 0 (clean) or 3 (lint findings only) pass, anything else
/// (1: parse error) fails with promtool's output.
fn promtool(body: &[u8]) -> Result<(), String> {
    let (code, out) = run(
        Command::new(std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into()))
            .args(["check", "metrics"]),
        body,
    )?;
    match code {
        Some(0) | Some(3) if !out.contains("error while linting") => Ok(()),
        _ => Err(format!("promtool check metrics (exit {code:?}): {out}")),
    }
}

fn client_python(body: &[u8], openmetrics: bool) -> Result<(), String> {
    let mut cmd = crate::sidecar::python(&["prometheus_client"]);
    cmd.arg("-c")
        .arg(PYTHON_CHECK)
        .arg(if openmetrics { "openmetrics" } else { "text" });
    let (code, out) = run(&mut cmd, body)?;
    if code == Some(0) {
        Ok(())
    } else {
        Err(format!("client_python parser (exit {code:?}): {out}"))
    }
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Result<(Option<i32>, String), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {cmd:?} ({e}); promtool comes with `apt-get install prometheus` \
                 and prometheus_client with `pip install -r sidecar/tests/requirements.txt` \
                 (.ci/run installs both)"
            )
        })?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let body = stdin.to_vec();
    // Written from a thread so a large body cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&body);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    let _ = writer.join();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text.trim().to_string()))
}

/// The checks neither tool makes: a `# TYPE` (family) appears once, and a series (sample
/// name and label set, in any label order) once; within a series no label name repeats.
/// In OpenMetrics the body ends with `# EOF`.
fn check_structure(text: &str, openmetrics: bool) -> Result<(), String> {
    let mut types = HashSet::new();
    let mut series = HashSet::new();
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !types.insert(name.to_string()) {
                return Err(format!("line {no}: family {name} has a second # TYPE"));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels) = split_series(line).map_err(|e| format!("line {no}: {e}"))?;
        let mut names = HashSet::new();
        for (n, _) in &labels {
            if !names.insert(n.clone()) {
                return Err(format!("line {no}: label {n} appears twice in {line}"));
            }
        }
        let mut sorted = labels;
        sorted.sort();
        if !series.insert((name.to_string(), sorted)) {
            return Err(format!("line {no}: series appears twice: {line}"));
        }
    }
    if openmetrics && text.lines().last() != Some("# EOF") {
        return Err("OpenMetrics body does not end with # EOF".into());
    }
    Ok(())
}

type LabelPairs = Vec<(String, String)>;

/// The sample name and labels (values still escaped) of a sample line.
fn split_series(line: &str) -> Result<(&str, LabelPairs), String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without a value")?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    if line[name_end..].starts_with('{') {
        let mut rest = &line[name_end + 1..];
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                let _ = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let label = rest[..eq].to_string();
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        if let Some((_, c)) = chars.next() {
                            value.push('\\');
                            value.push(c);
                        }
                    }
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            labels.push((label, value));
            rest = &rest[end + 1..];
        }
    }
    Ok((name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_finds_what_the_parsers_let_through() {
        assert!(check_structure("a 1\nb{x=\"1\"} 2\n", false).is_ok());
        assert!(check_structure("a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 1\n", false).is_err());
        assert!(check_structure("a{x=\"1\",x=\"2\"} 1\n", false).is_err());
        assert!(check_structure("# TYPE a counter\na 1\n# TYPE a counter\n", false).is_err());
        assert!(check_structure("a{x=\"q\\\"}\"} 1\na{x=\"q\"} 1\n", false).is_ok());
        assert!(check_structure("a 1\n", true).is_err());
        assert!(check_structure("a 1\n# EOF\n", true).is_ok());
    }

    #[test]
    fn openmetrics_help_escapes_become_text_escapes() {
        assert_eq!(
            help_for_text(r#"# HELP a say \"hi\" \\ \n"#),
            r#"# HELP a say "hi" \\ \n"#
        );
    }
}
