//! Test support: start the host binary, talk HTTP/1.1 to it, stop it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Run-time overrides let the built test binary run on another machine (the
// GPU check, scripts/gpu-check.sh): TENSOR_WASM_TEST_BIN (host binary),
// TENSOR_WASM_TEST_GUESTS (guest .wasm folder), TENSOR_WASM_TEST_ROOT
// (repository), TENSOR_WASM_TEST_TMP (scratch space) and
// TENSOR_WASM_TEST_DEVICE (`--device` for every host the tests start).

fn env_or(name: &str, built_in: &str) -> PathBuf {
    std::env::var_os(name).map_or_else(|| PathBuf::from(built_in), PathBuf::from)
}

/// The host binary under test.
pub fn bin() -> PathBuf {
    env_or("TENSOR_WASM_TEST_BIN", env!("CARGO_BIN_EXE_tensor-wasm"))
}

/// `--device` for the hosts the tests start, when set.
pub fn device_args() -> Vec<String> {
    std::env::var("TENSOR_WASM_TEST_DEVICE")
        .map(|d| vec!["--device".to_string(), d])
        .unwrap_or_default()
}

/// A guest component built from `components/`.
pub fn guest(name: &str) -> PathBuf {
    env_or("TENSOR_WASM_TEST_GUESTS", env!("TW_GUEST_DIR")).join(format!("{name}.wasm"))
}

/// The repository root.
pub fn root() -> PathBuf {
    std::env::var_os("TENSOR_WASM_TEST_ROOT").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf()
        },
        PathBuf::from,
    )
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = env_or("TENSOR_WASM_TEST_TMP", env!("CARGO_TARGET_TMPDIR"))
        .join("e2e")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes deployment-file `text` to `dir/deploy.toml`; returns its path.
pub fn deployment_file(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("deploy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// A chunked request body of `chunks` chunks of `size` bytes each, so its
/// length is only known while it is read.
pub fn chunked_body(chunks: usize, size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..chunks {
        body.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'y', size));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// A running host.
pub struct Server {
    child: Child,
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `tensor-wasm serve ARGS` on ephemeral ports with its cache in
    /// `cache` and, unless ARGS name one, a data directory of its own beside it.
    pub fn start(args: &[&str], cache: &Path) -> Server {
        Server::start_env(args, cache, &[])
    }

    /// [`Server::start`] with `env` added to the server's environment.
    pub fn start_env(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with(args, cache, env, None)
    }

    /// [`Server::start`] in a process allowed at most `nofile` open files
    /// (soft and hard limit, as `ulimit -n` sets them).
    pub fn start_nofile(args: &[&str], cache: &Path, nofile: u64) -> Server {
        Server::start_with(args, cache, &[], Some(nofile))
    }

    fn start_with(
        args: &[&str],
        cache: &Path,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Server {
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut data = Vec::new();
        if !args.contains(&"--data-dir") {
            let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = cache
                .file_name()
                .map_or("server".into(), |n| n.to_string_lossy());
            let dir = cache.with_file_name(format!("{name}-data-{n}"));
            data = vec!["--data-dir".into(), dir.display().to_string()];
        }
        let mut command = Command::new(bin());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // of the parent.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--cache-dir",
            ])
            .arg(cache)
            .args(args)
            .args(&data)
            .args(device_args())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tensor-wasm");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        let until = Instant::now() + Duration::from_secs(120);
        while addr.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "server did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                });
            // The address ends at a space, or at the quote closing a JSON
            // log line's message (`--log-format json`).
            let address = |rest: &str| rest.split([' ', '"']).next().unwrap().parse().unwrap();
            let after = |what: &str| {
                [format!("{what} http://"), format!("{what} https://")]
                    .iter()
                    .find_map(|p| line.split(p.as_str()).nth(1))
                    .map(address)
            };
            addr = addr.or_else(|| after("serving on"));
            admin = admin.or_else(|| after("admin on"));
        }
        Server {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            log,
        }
    }

    /// The tensor backend the server chose (`cpu`, `cuda:0`), from its log.
    pub fn tensor_device(&self) -> String {
        let log = self.log();
        let rest = log
            .split("tensor backend: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no `tensor backend:` line in the log:\n{log}"));
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"")
    }

    /// The admin listener's `/metrics` text.
    pub fn metrics(&self) -> String {
        request(self.admin, "GET", "/metrics", &[], b"").text()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Value of a counter or gauge sample line `name{labels} value` in metrics text
/// (0 when absent). `labels` must all appear in the sample's label set.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        // `name{labels} value [# {exemplar} value]`
        .filter_map(|l| {
            l.split(" # ")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body).expect("request")
}

/// [`request`], with connection and read failures returned (a server that
/// dies mid-request).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = Vec::new();
    write_request(&mut head, method, path, headers, body, true);
    stream.write_all(&head)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader)
}

/// Writes one request.
pub fn write_request(
    stream: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("host: localhost\r\n");
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// Reads one response (content-length, chunked, or until close).
pub fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Runs `tensor-wasm ARGS` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if args.first().is_some_and(|a| a == "run") {
        // Flags go before the job's `--`-separated arguments.
        args.splice(1..1, device_args());
    }
    let out = Command::new(bin())
        .args(&args)
        .output()
        .expect("run tensor-wasm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Healthy load: `threads` clients sending `GET path` until `stop` is set;
/// returns (successes, failures as "status body").
pub fn load(
    addr: SocketAddr,
    path: &'static str,
    threads: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut bad) = (0, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = request(addr, "GET", path, &[], b"");
                        if r.status == 200 {
                            ok += 1;
                        } else {
                            bad.push(format!("{} {}", r.status, r.text()));
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new()),
            |(a, mut b), (ok, bad)| {
                b.extend(bad);
                (a + ok, b)
            },
        )
    })
}

/// `sha256:HEX` of `token`, as token files list it.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `tenant`'s audit records in `data` (`tensor-wasm audit query`), as JSON.
pub fn audit_records(data: &Path, tenant: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = run(&[
        "audit",
        "query",
        "--tenant",
        tenant,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
