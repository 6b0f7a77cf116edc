//! What a Dockerfile's final (runtime) stage puts in an image, read from its text: base, user,
//! entrypoint, exposed ports and the files its `COPY` lines write. `tests/images.rs` compares
//! the published Dockerfiles with the Containerfiles `ci/images.sh` builds locally.

use std::collections::BTreeSet;

/// The runtime content of the last stage of a Dockerfile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuntimeStage {
    /// The `FROM` image of the last stage.
    pub base: String,
    pub user: Option<String>,
    /// As written (exec form keeps its JSON array).
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    pub exposed: BTreeSet<String>,
    /// Every file written by a `COPY`/`ADD`: its path in the image.
    pub files: BTreeSet<String>,
    /// Sources copied from the build context (not `--from=` another stage).
    pub context_sources: Vec<String>,
}

/// Parses the last stage of `text` (line continuations joined, comments and parser
/// directives skipped). `None` when there is no `FROM`.
pub fn runtime_stage(text: &str) -> Option<RuntimeStage> {
    let mut stage: Option<RuntimeStage> = None;
    for instruction in instructions(text) {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .map(|(k, r)| (k, r.trim()))
            .unwrap_or((instruction.as_str(), ""));
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let base = rest.split_whitespace().next().unwrap_or_default();
                stage = Some(RuntimeStage {
                    base: base.into(),
                    ..RuntimeStage::default()
                });
            }
            "USER" => {
                if let Some(s) = stage.as_mut() {
                    s.user = Some(rest.into());
                }
            }
            "ENTRYPOINT" => {
                if let Some(s) = stage.as_mut() {
                    s.entrypoint = Some(rest.into());
                }
            }
            "CMD" => {
                if let Some(s) = stage.as_mut() {
                    s.cmd = Some(rest.into());
                }
            }
            "EXPOSE" => {
                if let Some(s) = stage.as_mut() {
                    s.exposed.extend(rest.split_whitespace().map(String::from));
                }
            }
            "COPY" | "ADD" => {
                if let Some(s) = stage.as_mut() {
                    copy(s, rest);
                }
            }
            _ => {}
        }
    }
    stage
}

/// Records the files one `COPY`/`ADD` (shell form) writes: `SRC... DEST`, a destination ending
/// in `/` receiving each source under its own name.
fn copy(stage: &mut RuntimeStage, args: &str) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let from_stage = words.iter().any(|w| w.starts_with("--from="));
    let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
    let Some((dest, sources)) = paths.split_last() else {
        return;
    };
    for source in sources {
        let file = if dest.ends_with('/') {
            let name = source.rsplit('/').next().unwrap_or(source);
            format!("{dest}{name}")
        } else {
            (*dest).to_string()
        };
        stage.files.insert(file);
        if !from_stage {
            stage.context_sources.push((*source).to_string());
        }
    }
}

/// The instructions of a Dockerfile, one string each, continuation lines joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_stage_counts_with_continuations_and_directory_destinations() {
        let text = "# syntax=docker/dockerfile:1\nARG X=1\nFROM rust AS builder\nUSER root\n\
                    COPY . .\nRUN make \\\n && make install\nFROM scratch\nLABEL a=b \\\n  c=d\n\
                    COPY etc/passwd etc/group /etc/\n\
                    COPY --from=builder /out/bin /usr/local/bin/bin\nUSER 65532:65532\n\
                    EXPOSE 9102/tcp \\\n  8125/udp\nENTRYPOINT [\"/usr/local/bin/bin\"]\n";
        let stage = runtime_stage(text).expect("a stage");
        assert_eq!(stage.base, "scratch");
        assert_eq!(stage.user.as_deref(), Some("65532:65532"));
        assert_eq!(
            stage.entrypoint.as_deref(),
            Some("[\"/usr/local/bin/bin\"]")
        );
        assert_eq!(
            stage.files.iter().map(String::as_str).collect::<Vec<_>>(),
            ["/etc/group", "/etc/passwd", "/usr/local/bin/bin"]
        );
        assert_eq!(stage.context_sources, ["etc/passwd", "etc/group"]);
        assert_eq!(
            stage.exposed.iter().map(String::as_str).collect::<Vec<_>>(),
            ["8125/udp", "9102/tcp"]
        );
    }

    #[test]
    fn no_from_is_no_stage_and_odd_lines_do_not_panic() {
        assert_eq!(runtime_stage("# only a comment\nUSER x\n"), None);
        let stage =
            runtime_stage("FROM scratch\nCOPY\nCOPY onlyone\nEXPOSE\nUSER\n\\\n").expect("a stage");
        assert!(stage.files.is_empty());
        assert_eq!(stage.user.as_deref(), Some(""));
    }
}
