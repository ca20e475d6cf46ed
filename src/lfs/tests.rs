//! The transfer rules against two tiny HTTP origins: the connection's (batch API, with
//! the credential) and a storage origin (objects, never with the credential).

use super::*;
use crate::archive::Archive;
use crate::git::LfsPointer;
use crate::providers::auth::AuthScheme;
use crate::providers::http::RetryPolicy;
use crate::providers::{failover, Authenticator, HttpGate};
use crate::vault::{Credential, CredentialKind};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request an origin received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 origin on 127.0.0.1 answering each request with `answer`, one
/// connection per request; what it received is in `seen`.
struct Origin {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    fn start(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || serve(stream, &log, &*answer));
            }
        });
        Origin { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

fn serve(stream: std::net::TcpStream, log: &Mutex<Vec<Seen>>, answer: &dyn Fn(&Seen) -> Answer) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("request line");
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    let seen = Seen {
        path,
        headers,
        body,
    };
    let (status, extra, body) = answer(&seen);
    log.lock().expect("log").push(seen);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&body);
}

const TOKEN: &str = "connection-token";

/// A gate whose connection is `origin` (Bearer [`TOKEN`]).
fn gate(origin: &Origin) -> HttpGate {
    let client = crate::providers::http::client(&RetryPolicy::default());
    let auth = Arc::new(Authenticator::new(
        Credential {
            kind: CredentialKind::AccessToken,
            identity: None,
            secret: TOKEN.to_string().into(),
        },
        AuthScheme::Bearer,
        AuthScheme::Bearer,
        None,
        client.clone(),
    ));
    let allowed = vec![url::Url::parse(&origin.url).expect("url").origin()];
    HttpGate::new(client, allowed, auth, RetryPolicy::default())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn archive() -> (tempfile::TempDir, Archive) {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Archive::open_or_create(dir.path()).expect("archive");
    (dir, archive)
}

#[test]
fn the_credential_stays_on_the_connections_origins() {
    let content = b"attachment bytes".to_vec();
    let body = content.clone();
    let storage = Origin::start(move |_| (200, vec![], body.clone()));
    let to = format!("{}/blob?Signature=s3cr3t", storage.url);
    let conn = Origin::start(move |_| (302, vec![("Location".into(), to.clone())], vec![]));
    let gate = gate(&conn);
    let (_dir, archive) = archive();

    let url = format!("{}/2.0/repositories/ws/r/downloads/a.txt", conn.url);
    let put = download_file(&gate, &archive, &url, Some(content.len() as u64)).expect("download");
    assert_eq!(archive.read_blob(&put.id).expect("blob"), content);
    let first = &conn.seen()[0];
    assert_eq!(first.header("authorization"), [format!("Bearer {TOKEN}")]);
    let redirected = &storage.seen()[0];
    assert_eq!(redirected.path, "/blob?Signature=s3cr3t");
    assert!(
        redirected.header("authorization").is_empty(),
        "the credential followed the redirect: {redirected:?}"
    );

    // A wrong size stores nothing and says so, without the signed query.
    let err = download_file(&gate, &archive, &url, Some(3)).expect_err("wrong size");
    let text = err.to_string();
    assert!(text.contains("3 expected"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[test]
fn each_object_is_stored_or_reported_alone() {
    let good = b"good object".to_vec();
    let corrupt = b"the server sends other bytes".to_vec();
    let mut other = corrupt.clone();
    other[0] ^= 1;
    let (g, c) = (good.clone(), other.clone());
    let storage = Origin::start(move |req| match req.path.as_str() {
        // The action's header, exactly, is the only way in.
        "/good" if req.header("authorization") == ["Grant g"] => (200, vec![], g.clone()),
        "/corrupt" => (200, vec![], c.clone()),
        "/gone" => (410, vec![], vec![]),
        _ => (400, vec![], b"InvalidArgument".to_vec()),
    });
    let pointers = [
        LfsPointer {
            oid: sha256(&good),
            size: good.len() as u64,
        },
        LfsPointer {
            oid: sha256(&corrupt),
            size: corrupt.len() as u64,
        },
        LfsPointer {
            oid: sha256(b"gone"),
            size: 4,
        },
        LfsPointer {
            oid: sha256(b"absent"),
            size: 6,
        },
    ];
    let s = storage.url.clone();
    let answers = serde_json::json!({"transfer": "basic", "objects": [
        {"oid": pointers[0].oid, "size": pointers[0].size, "actions": {"download":
            {"href": format!("{s}/good"), "header": {"Authorization": "Grant g"}}}},
        {"oid": pointers[1].oid, "size": pointers[1].size, "actions": {"download": {"href": format!("{s}/corrupt")}}},
        {"oid": pointers[2].oid, "size": 4, "actions": {"download": {"href": format!("{s}/gone")}}},
        {"oid": pointers[3].oid, "size": 6, "error": {"code": 404, "message": "Object does not exist"}},
    ]})
    .to_string();
    let conn = Origin::start(move |_| (200, vec![], answers.clone().into_bytes()));
    let gate = gate(&conn);
    let (_dir, archive) = archive();
    let recorded = Mutex::new(Vec::new());
    let on_stored = |p: &LfsPointer, _: &crate::archive::PutOutcome| {
        recorded.lock().expect("recorded").push(p.oid.clone());
        Ok(())
    };
    let opts = options(4, policy(), &on_stored);
    let report = fetch_objects(
        &gate,
        &archive,
        &format!("{}/r.git/info/lfs", conn.url),
        &pointers,
        &opts,
    )
    .expect("fetch");

    assert_eq!(report.stored.len(), 1, "{report:?}");
    assert_eq!(report.stored[0].0, pointers[0]);
    assert_eq!(
        archive.read_blob(&report.stored[0].1.id).expect("blob"),
        good
    );
    assert_eq!(
        *recorded.lock().expect("recorded"),
        [pointers[0].oid.clone()]
    );
    let reason = |p: &LfsPointer| {
        report
            .missing
            .iter()
            .find(|(m, _)| m == p)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    assert!(reason(&pointers[1]).contains("corrupt"), "{report:?}");
    assert!(reason(&pointers[2]).contains("410"), "{report:?}");
    assert!(reason(&pointers[3]).contains("404"), "{report:?}");
    assert!(!archive.has_blob(&crate::archive::BlobId::of(&other)));

    let batch = &conn.seen()[0];
    assert_eq!(batch.path, "/r.git/info/lfs/objects/batch");
    assert_eq!(batch.header("accept"), [MEDIA_TYPE]);
    assert_eq!(batch.header("authorization"), [format!("Bearer {TOKEN}")]);
    let sent: serde_json::Value = serde_json::from_slice(&batch.body).expect("json");
    assert_eq!(sent["operation"], "download");
    assert_eq!(sent["transfers"], serde_json::json!(["basic"]));
    for req in storage.seen() {
        assert!(
            !req.header("authorization")
                .contains(&format!("Bearer {TOKEN}").as_str()),
            "the credential went to the storage origin: {req:?}"
        );
    }
}

#[test]
fn objects_are_asked_for_in_batches_of_at_most_100() {
    let conn = Origin::start(|req| {
        let asked: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
        let objects: Vec<_> = asked["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| serde_json::json!({"oid": o["oid"], "size": o["size"], "error": {"code": 404, "message": "no"}}))
            .collect();
        (
            200,
            vec![],
            serde_json::json!({"objects": objects})
                .to_string()
                .into_bytes(),
        )
    });
    let pointers: Vec<LfsPointer> = (0..250)
        .map(|i| LfsPointer {
            oid: sha256(format!("{i}").as_bytes()),
            size: 1,
        })
        .collect();
    let (_dir, archive) = archive();
    let opts = options(8, policy(), &|_, _| Ok(()));
    let report = fetch_objects(&gate(&conn), &archive, &conn.url, &pointers, &opts).expect("fetch");
    assert_eq!(report.missing.len(), 250);
    let sizes: Vec<usize> = conn
        .seen()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            v["objects"].as_array().map(Vec::len).unwrap_or(0)
        })
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
}

fn policy() -> failover::Policy {
    failover::Policy {
        retries: 0,
        backoff: Duration::from_millis(1),
        network_wait_cap: Duration::from_millis(10),
        max_wait: Duration::from_millis(10),
        rate_limit_retries: 1,
        when_exhausted: failover::WhenExhausted::GiveUp,
    }
}

#[test]
fn a_rate_limited_batch_request_waits_and_goes_on() {
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let conn = Origin::start(move |req| {
        let mut n = counter.lock().expect("calls");
        *n += 1;
        if *n == 1 {
            return (429, vec![("Retry-After".into(), "1".into())], vec![]);
        }
        let asked: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
        let oid = asked["objects"][0]["oid"].clone();
        let answer = serde_json::json!({"objects": [{"oid": oid, "error": {"code": 410, "message": "gone"}}]});
        (200, vec![], answer.to_string().into_bytes())
    });
    let gate = gate(&conn);
    let (_dir, archive) = archive();
    let mut policy = policy();
    policy.rate_limit_retries = 3;
    let opts = options(1, policy, &|_, _| Ok(()));
    let pointer = LfsPointer {
        oid: sha256(b"x"),
        size: 1,
    };
    let report = fetch_objects(&gate, &archive, &conn.url, &[pointer], &opts).expect("fetch");
    assert_eq!(
        *calls.lock().expect("calls"),
        2,
        "tried again after the 429"
    );
    assert!(report.missing[0].1.contains("410"), "{report:?}");
    assert_eq!(
        gate.stats
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Fetch options with no retries of downloads; never interrupted.
fn options<'a>(
    concurrency: usize,
    policy: failover::Policy,
    on_stored: &'a (dyn Fn(
        &LfsPointer,
        &crate::archive::PutOutcome,
    ) -> Result<(), crate::archive::ArchiveError>
             + Sync),
) -> FetchOptions<'a> {
    static NEVER: AtomicBool = AtomicBool::new(false);
    FetchOptions {
        concurrency,
        policy,
        retries: 0,
        retry_base: Duration::from_millis(1),
        interrupt: &NEVER,
        on_stored,
    }
}

#[test]
fn an_object_whose_download_url_expired_is_asked_for_again() {
    let content = b"expiring object".to_vec();
    let body = content.clone();
    let storage = Origin::start(move |_| (200, vec![], body.clone()));
    let calls = Arc::new(Mutex::new(0i64));
    let (counter, href) = (calls.clone(), format!("{}/obj", storage.url));
    let conn = Origin::start(move |req| {
        let mut n = counter.lock().expect("calls");
        *n += 1;
        let asked: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
        let o = &asked["objects"][0];
        // First an action already expired (git-lfs: a negative `expires_in`), then a good one.
        let expires_in = if *n == 1 { -1 } else { 3600 };
        let answer = serde_json::json!({"objects": [{"oid": o["oid"], "size": o["size"],
            "actions": {"download": {"href": href, "expires_in": expires_in}}}]});
        (200, vec![], answer.to_string().into_bytes())
    });
    let (_dir, archive) = archive();
    let pointer = LfsPointer {
        oid: sha256(&content),
        size: content.len() as u64,
    };
    let opts = options(2, policy(), &|_, _| Ok(()));
    let report =
        fetch_objects(&gate(&conn), &archive, &conn.url, &[pointer], &opts).expect("fetch");
    assert_eq!(*calls.lock().expect("calls"), 2);
    assert_eq!(report.stored.len(), 1, "{report:?}");
    assert_eq!(storage.seen().len(), 1, "the expired URL was not used");
}
