//! The receive-pack protocol's text: pkt-lines, the ref advertisement, the server's answer
//! (side-band demultiplexing, `report-status`), and server refusals turned into messages that
//! name the ref and say what to do.

use std::io::{self, BufRead, Read};

use super::{RefUpdate, RemoteRefs};
use crate::git::GitError;

/// The longest pkt-line (its 4-byte length included).
const MAX_PKT: usize = 65520;
/// How many `remote:` lines a message quotes at most.
const MAX_REMOTE_LINES: usize = 40;

/// Appends `data` as one pkt-line.
pub(super) fn write_pkt(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// Reads one pkt-line into `buf`; `Ok(false)` for a flush packet.
fn read_pkt(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "bad pkt-line length {:?}",
                String::from_utf8_lossy(&len)
            ))
        })?;
    buf.clear();
    match len {
        0 => Ok(false),
        1..=3 => Ok(true),
        _ if len > MAX_PKT => Err(io::Error::other(format!("pkt-line of {len} bytes"))),
        _ => {
            buf.resize(len - 4, 0);
            input.read_exact(buf)?;
            Ok(true)
        }
    }
}

fn protocol_error(url: &str, what: &str, err: impl std::fmt::Display) -> GitError {
    GitError::Transport {
        url: url.to_owned(),
        message: format!("{what}: {err}"),
    }
}

/// Parses the ref advertisement of `GET info/refs?service=git-receive-pack`.
pub(super) fn parse_advertisement(
    mut input: impl BufRead,
    url: &str,
) -> Result<RemoteRefs, GitError> {
    let bad = |err: io::Error| protocol_error(url, "unreadable ref advertisement", err);
    let mut buf = Vec::new();
    let mut remote = RemoteRefs::default();
    let mut first = true;
    let mut saw_service = false;
    while read_pkt(&mut input, &mut buf).map_err(bad)? {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches('\n');
        if first && line.starts_with("# service=") {
            saw_service = true;
            // A flush follows the service line; the refs come after it.
            if read_pkt(&mut input, &mut buf).map_err(bad)? {
                return Err(bad(io::Error::other("no flush after the service line")));
            }
            continue;
        }
        if let Some(message) = line.strip_prefix("ERR ") {
            return Err(protocol_error(url, "the server refused the push", message));
        }
        let (line, caps) = match line.split_once('\0') {
            Some((line, caps)) => (line, Some(caps)),
            None => (line, None),
        };
        if let Some(caps) = caps.filter(|_| first) {
            remote.capabilities = caps.split_whitespace().map(str::to_owned).collect();
        }
        first = false;
        let Some((id, name)) = line.split_once(' ') else {
            return Err(bad(io::Error::other(format!("bad ref line {line:?}"))));
        };
        if name == "capabilities^{}" || name == ".have" {
            continue;
        }
        remote.refs.push((name.to_owned(), id.to_owned()));
    }
    if !saw_service {
        return Err(bad(io::Error::other(
            "no `# service=git-receive-pack` line (not a smart-HTTP server?)",
        )));
    }
    remote.refs.sort();
    Ok(remote)
}

/// What the server answered to the push.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Per ref: `None` when updated, else the server's reason.
    refs: Vec<(String, Option<String>)>,
    /// The lines the server sent on the progress band (hook output and the like).
    remote: Vec<String>,
}

/// Reads the answer to the POST: the report (through side-band-64k when `sideband`).
pub(super) fn read(
    mut answer: Box<dyn BufRead + Send>,
    sideband: bool,
    url: &str,
) -> Result<Outcome, GitError> {
    let bad = |err: io::Error| protocol_error(url, "unreadable answer to the push", err);
    let mut outcome = Outcome::default();
    let report = if sideband {
        let mut report = Vec::new();
        let mut buf = Vec::new();
        let mut partial = String::new();
        while read_pkt(&mut answer, &mut buf).map_err(bad)? {
            match buf.split_first() {
                Some((1, data)) => report.extend_from_slice(data),
                Some((2, data)) => remote_text(&mut partial, data, &mut outcome.remote),
                Some((3, data)) => {
                    remote_text(&mut partial, b"\n", &mut outcome.remote);
                    return Err(GitError::PushRejected {
                        url: url.to_owned(),
                        message: format!(
                            "{}{}",
                            String::from_utf8_lossy(data).trim(),
                            quote(&outcome.remote)
                        ),
                    });
                }
                _ => {}
            }
        }
        remote_text(&mut partial, b"\n", &mut outcome.remote);
        report
    } else {
        let mut report = Vec::new();
        answer.read_to_end(&mut report).map_err(bad)?;
        report
    };
    for line in &outcome.remote {
        tracing::info!(target: "reposafe::git", %url, "remote: {line}");
    }
    parse_report(&report, &mut outcome, url)?;
    Ok(outcome)
}

/// Adds the complete lines of progress text `data` to `lines` (a `\r` ends a line too).
fn remote_text(partial: &mut String, data: &[u8], lines: &mut Vec<String>) {
    partial.push_str(&String::from_utf8_lossy(data));
    while let Some(end) = partial.find(['\n', '\r']) {
        let line: String = partial.drain(..=end).collect();
        let line = line.trim_end();
        if !line.is_empty() && lines.len() < MAX_REMOTE_LINES {
            lines.push(line.to_owned());
        }
    }
}

/// `remote:` lines as the tail of a message.
fn quote(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = String::from("; the server said:");
    for line in lines {
        text.push_str("\n  remote: ");
        text.push_str(line);
    }
    text
}

fn parse_report(report: &[u8], outcome: &mut Outcome, url: &str) -> Result<(), GitError> {
    let bad = |err: io::Error| protocol_error(url, "unreadable report-status", err);
    let mut input = report;
    let mut buf = Vec::new();
    while !input.is_empty() && read_pkt(&mut input, &mut buf).map_err(bad)? {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches('\n');
        if let Some(status) = line.strip_prefix("unpack ") {
            if status != "ok" {
                return Err(GitError::PushRejected {
                    url: url.to_owned(),
                    message: format!(
                        "the server could not store the pack ({status}){}",
                        quote(&outcome.remote)
                    ),
                });
            }
        } else if let Some(name) = line.strip_prefix("ok ") {
            outcome.refs.push((name.to_owned(), None));
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let (name, reason) = rest.split_once(' ').unwrap_or((rest, "refused"));
            outcome
                .refs
                .push((name.to_owned(), Some(reason.to_owned())));
        }
    }
    Ok(())
}

/// The result of each update, in the order given.
pub(super) fn per_ref(
    updates: &[RefUpdate],
    outcome: &Outcome,
    reported: bool,
) -> Vec<(String, Result<(), String>)> {
    updates
        .iter()
        .map(|update| {
            let status = outcome.refs.iter().find(|(name, _)| name == &update.name);
            let result = match status {
                Some((_, None)) => Ok(()),
                Some((name, Some(reason))) => Err(explain(name, reason, &outcome.remote)),
                // Without report-status the HTTP success is all there is to go by.
                None if !reported => Ok(()),
                None => Err(format!(
                    "the server did not report on {}; check the repository's refs",
                    update.name
                )),
            };
            (update.name.clone(), result)
        })
        .collect()
}

/// A refusal as a message naming `name` and saying what to do.
pub(super) fn explain(name: &str, reason: &str, remote: &[String]) -> String {
    let said = quote(remote);
    let text = remote.join("\n");
    if text.contains("over the size limit") {
        return format!(
            "{name} was refused: the target repository is over Bitbucket Cloud's 4 GB size limit \
             and takes no more data; reduce its size (or restore into another repository) and \
             run the restore again{said}"
        );
    }
    if text.contains("100 MB or larger") {
        return format!(
            "{name} was refused: it brings a file of 100 MB or more, which Bitbucket Cloud blocks; \
             a repository admin can turn the file size limit off (Repository settings > Advanced) \
             for the restore, then run it again{said}"
        );
    }
    if text.contains("can only be modified through pull requests")
        || text.contains("Permission denied to update branch")
        || text.contains("permission")
    {
        return format!(
            "{name} was refused by the target repository's branch permissions: exempt the \
             restoring credential from them (or lift them during the restore) and run it \
             again{said}"
        );
    }
    if reason.contains("non-fast-forward") || reason.contains("fetch first") {
        return format!(
            "{name} exists on the server with other commits (non-fast-forward) and is never \
             overwritten; restore into an empty repository, or with --into-existing, which \
             pushes it under refs/*/restored/<snapshot>/"
        );
    }
    if reason.contains("atomic") {
        return format!(
            "{name} was not updated because the server refused another ref of the same atomic \
             push (see that ref){said}"
        );
    }
    if reason.contains("hook declined") {
        return format!("{name} was refused by a pre-receive hook on the server ({reason}){said}");
    }
    format!("{name} was refused by the server: {reason}{said}")
}
