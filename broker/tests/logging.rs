//! The broker binary's log output: plain text without ANSI escapes when stdout is not a
//! terminal, and with `FJORD_LOG_FORMAT=json` one JSON object per line whose request events
//! carry the `request` span's fields (api, correlation id, client id, ...) and metadata commits
//! their `metadata_commit` span.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// A broker process whose stdout is collected by a reader thread.
struct Broker {
    child: Child,
    stdout: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a single node on ephemeral ports with `env` set (and any inherited log settings
    /// removed, so the test decides the format). stdout is a pipe, never a terminal.
    fn start(env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord-broker"));
        for kv in [
            "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
            "admin.listener=127.0.0.1:0".to_string(),
            format!("log.dirs={}", dir.path().display()),
        ] {
            cmd.arg("--override").arg(kv);
        }
        // NO_COLOR would hide colours on its own and let the ANSI check pass for the wrong reason.
        for var in ["FJORD_LOG", "FJORD_LOG_FORMAT", "NO_COLOR"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fjord-broker starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        let pipe = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            // Bytes, not str lines: a stray invalid byte must show up in the checks, not panic here.
            while pipe.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        Broker {
            child,
            stdout,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until some stdout line satisfies `check`; returns that line.
    fn wait_for_line(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.output().lines().find(|l| check(l)) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                let out = self.output();
                let lines: Vec<&str> = out.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                panic!("no {what} in 30 s; last stdout lines:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process and returns its complete stdout lines (a line cut by the kill is
    /// dropped).
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let out = self.output();
        let complete = out.rfind('\n').map_or("", |i| &out[..i]);
        complete.lines().map(str::to_string).collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One ApiVersions v3 request frame.
fn api_versions(correlation_id: i32, client_id: &'static str) -> Vec<u8> {
    let version = 3;
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(
            &mut buf,
            ApiKey::ApiVersions.request_header_version(version),
        )
        .unwrap();
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("fjord-logging-test"))
        .with_client_software_version(StrBytes::from_static_str("1"))
        .encode(&mut buf, version)
        .unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

#[test]
fn text_logs_to_a_pipe_have_no_ansi_escapes() {
    let broker = Broker::start(&[]);
    broker.wait_for_line("ready line", |l| l.contains("fjord-broker ready"));
    let lines = broker.stop();
    let escaped: Vec<&String> = lines.iter().filter(|l| l.contains('\x1b')).collect();
    assert!(
        escaped.is_empty(),
        "ANSI escapes in piped log output:\n{escaped:#?}"
    );
}

#[test]
fn json_logs_carry_request_and_commit_spans() {
    let broker = Broker::start(&[("FJORD_LOG_FORMAT", "json"), ("FJORD_LOG", "debug")]);
    let ready = broker.wait_for_line("ready line", |l| l.contains("fjord-broker ready"));
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready line is JSON");
    // `kafka` is the Debug form of the bound addresses: "[127.0.0.1:PORT]".
    let kafka = ready["fields"]["kafka"].as_str().expect("kafka field");
    let addr = kafka.trim_matches(|c| c == '[' || c == ']');

    let (correlation_id, client_id) = (424_242, "logging-test-client");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&api_versions(correlation_id, client_id))
        .unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body[..4], &correlation_id.to_be_bytes(), "answered");

    let is_ours = |v: &serde_json::Value| {
        v["span"]["name"] == "request"
            && v["span"]["api"] == "ApiVersions"
            && v["span"]["correlation_id"] == correlation_id
            && v["span"]["client_id"] == client_id
    };
    broker.wait_for_line("event in our request span", |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| is_ours(&v))
    });
    let lines = broker.stop();
    let mut ours = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        if is_ours(&v) {
            ours.push(v);
        }
    }
    let event = ours.first().expect("an event in the request span");
    assert_eq!(event["span"]["version"], 3, "{event}");
    assert_eq!(event["span"]["principal"], "User:ANONYMOUS", "{event}");
    assert_eq!(event["span"]["listener"], "PLAINTEXT", "{event}");
    // The span list names the same span (the request span is the outermost here).
    assert!(
        event["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "request")),
        "span list: {event}"
    );
    // The broker registers itself at start: a metadata commit, logged in its own span.
    let commit = lines.iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["span"]["name"] == "metadata_commit" && v["span"]["kind"] == "RegisterBroker")
            .then_some(v)
    });
    let commit = commit.expect("a RegisterBroker metadata commit logged in its span");
    assert_eq!(commit["span"]["records"], 1, "{commit}");
}
