//! README.md as a test: its walk-throughs (imsctl, audit, copies across regions) run line by
//! line, as written, against a real `imsd run` (its own nats-server, auth on) in a fresh folder,
//! so a README that drifts from the code fails the build.
//!
//! How a block is read:
//! - every line is a shell command, run by bash from the folder `imsd run` was started in, with
//!   the `alias` lines seen so far; a line ending in `\` continues on the next; each must exit 0;
//! - a line `#   text` is the output the command before it prints, matched exactly except for
//!   ids: `01a2...` (four characters and `...`) stands for an id, captured the first time and
//!   substituted into later commands;
//! - `<64 hex digits>` and `<the same 64 hex digits>` stand for one SHA-256;
//! - `deploy/run.sh ARGS` restarts imsd with ARGS on the same data dir;
//! - a command whose comment says "a moment later" waits on something asynchronous (the copy
//!   saga) and is retried for a while, as a reader would;
//! - `target/release/imsctl` and `target/release/imsd` are this build's binaries, and
//!   `localhost:8080` is the HTTP address this imsd got (a free port);
//!   (imsctl gets it as `IMS_HTTP_URL`);
//! - `NAME=value` lines, like `alias` lines, hold for the commands after them;
//! - a command whose comment says "needs the internet" is skipped (CI has none).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECTIONS: [&str; 5] = [
    "## Walk-through with imsctl",
    "## Audit",
    "## HTTP API",
    "## Image files",
    "## Copies across regions",
];

const SHA256: &str = "abababababababababababababababababababababababababababababababab";

/// The first indented code block of a README section, continuations joined (a section's later
/// blocks are references, such as the list of HTTP routes).
fn block(readme: &str, title: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n{title}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {title:?}"));
    let section = &readme[start + 1..];
    let end = section[title.len()..]
        .find("\n## ")
        .map_or(section.len(), |e| e + title.len());
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in section[..end].lines() {
        if !lines.is_empty() && !line.starts_with("    ") {
            break; // the first block ended
        }
        let Some(code) = line.strip_prefix("    ") else {
            continue;
        };
        let code = code.trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim_start());
            pending.push(' ');
            continue;
        }
        pending.push_str(code.trim_start());
        lines.push(std::mem::take(&mut pending));
    }
    lines
}

/// The placeholder ids (`01a2...`) of a line.
fn placeholder() -> regex::Regex {
    regex::Regex::new(r"\b([0-9a-f]{4})\.\.\.").unwrap()
}

/// imsd started the way `deploy/run.sh ARGS` starts it, in `home`.
fn start_imsd(home: &Path, args: &[&str]) -> (ims_tests::KilledOnDrop, String) {
    let http = format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap());
    let child: Child = Command::new(home.join("target/release/imsd"))
        .arg("run")
        .args(["--http-addr", &http])
        .args(args)
        .current_dir(home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let url = home.join("data/nats.url");
    while !url.exists() || !home.join("data/operator.token").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "imsd did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (ims_tests::KilledOnDrop(child), http)
}

fn stop(imsd: &mut ims_tests::KilledOnDrop) {
    imsd.terminate();
    assert!(imsd.wait().unwrap().success(), "imsd did not stop cleanly");
}

/// Runs `command` (aliases in `prelude`) in `home`, retrying while imsd is still starting, and
/// for a while when the README says its answer comes "a moment later".
fn run(home: &Path, prelude: &str, command: &str, http: &str) -> String {
    let eventually = command.contains("a moment later");
    let script = format!("shopt -s expand_aliases\n{prelude}{command}\n");
    let started = Instant::now();
    loop {
        let output = Command::new("bash")
            .args(["-c", &script])
            .current_dir(home)
            .env_remove("IMS_TOKEN")
            .env_remove("IMS_TENANT")
            .env_remove("IMS_NATS_URL")
            .env_remove("IMS_REGION")
            .env("IMS_HTTP_URL", format!("http://{http}"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            return stdout;
        }
        // Exit 3: the service could not be reached yet (its roles start after NATS).
        let waiting = (output.status.code() == Some(3) || eventually)
            && started.elapsed() < Duration::from_secs(30);
        assert!(
            waiting,
            "README command failed ({}):\n  {command}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_readme_walk_throughs_run_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("target/release");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imsctl-under-test"), bin.join("imsctl"))
        .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imsd-under-test"), bin.join("imsd")).unwrap();

    let (mut imsd, mut http) = start_imsd(home.path(), &[]);
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut prelude = String::new();
    let mut last_output = String::new();
    let mut ran = 0;
    for title in SECTIONS {
        for line in block(&readme, title) {
            if let Some(expected) = line.strip_prefix("#   ") {
                // The documented output of the command before: ids captured, the rest exact.
                let mut pattern = String::from("(?m)^");
                let mut names = Vec::new();
                let mut at = 0;
                for found in placeholder().captures_iter(expected) {
                    let whole = found.get(0).unwrap();
                    pattern.push_str(&regex::escape(&expected[at..whole.start()]));
                    pattern.push_str("([0-9a-f-]{36})");
                    names.push(found[1].to_owned());
                    at = whole.end();
                }
                pattern.push_str(&regex::escape(&expected[at..]));
                pattern.push('$');
                let matched = regex::Regex::new(&pattern)
                    .unwrap()
                    .captures(&last_output)
                    .unwrap_or_else(|| {
                        panic!(
                            "README promises {expected:?}\nbut the command printed:\n{last_output}"
                        )
                    });
                for (index, name) in names.into_iter().enumerate() {
                    let id = matched[index + 1].to_owned();
                    if let Some(known) = ids.get(&name) {
                        assert_eq!(known, &id, "{name}... names two ids");
                    }
                    ids.insert(name, id);
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(args) = line.strip_prefix("deploy/run.sh") {
                let args: Vec<&str> = args.split('#').next().unwrap().split_whitespace().collect();
                stop(&mut imsd);
                (imsd, http) = start_imsd(home.path(), &args);
                continue;
            }
            let assignment = line.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            });
            if line.starts_with("alias ") || line.starts_with("export ") || assignment {
                prelude.push_str(&line);
                prelude.push('\n');
                continue;
            }
            let command = placeholder()
                .replace_all(&line, |found: &regex::Captures| {
                    ids.get(&found[1])
                        .unwrap_or_else(|| {
                            panic!("{}... is used before any output names it", &found[1])
                        })
                        .clone()
                })
                .replace("localhost:8080", &http)
                .replace("<the same 64 hex digits>", SHA256)
                .replace("<64 hex digits>", SHA256);
            if command.contains("needs the internet") {
                continue;
            }
            last_output = run(home.path(), &prelude, &command, &http);
            ran += 1;
        }
    }
    assert!(ran >= 30, "only {ran} README commands ran");
    stop(&mut imsd);
}
