//! Real `fedid-server` processes for the benchmark, and their memory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub port: u16,
    pub db_url: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /healthz` with a raw socket, so waiting needs no HTTP client.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// How to run a server beyond its configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct Launch<'a> {
    /// Where its log goes (at `info`), instead of nowhere.
    pub log: Option<&'a Path>,
    /// Its file-descriptor limit (soft and hard), through `prlimit`.
    pub max_open_files: Option<u64>,
}

impl Server {
    pub fn start(binary: &Path, db_url: &str, env: &[(&str, &str)]) -> Result<Self, String> {
        Self::launch(binary, db_url, env, Launch::default())
    }

    pub fn launch(binary: &Path, db_url: &str, env: &[(&str, &str)], launch: Launch<'_>) -> Result<Self, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let stderr = match launch.log {
            Some(path) => {
                env.push(("FEDID__LOG__LEVEL".into(), "info".into()));
                Stdio::from(std::fs::File::create(path).map_err(|e| e.to_string())?)
            }
            None => Stdio::null(),
        };
        let mut command = Self::base_command(binary, port, db_url, &env);
        if let Some(limit) = launch.max_open_files {
            let program = command.get_program().to_owned();
            let mut limited = Command::new("prlimit");
            limited.arg(format!("--nofile={limit}:{limit}")).arg(program);
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => limited.env(key, value),
                    None => limited.env_remove(key),
                };
            }
            command = limited;
        }
        let child = command
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| e.to_string())?;
        let server = Self {
            child,
            port,
            db_url: db_url.to_owned(),
            binary: binary.to_owned(),
            env,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(port) {
            if Instant::now() > deadline {
                return Err(format!("fedid-server on port {port} did not come up"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn base_command(binary: &Path, port: u16, db_url: &str, env: &[(String, String)]) -> Command {
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FEDID__") || k == "RUST_LOG") {
            command.env_remove(key);
        }
        command
            .env("FEDID__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("FEDID__FEDERATION__DOMAIN", format!("127.0.0.1:{port}"))
            .env("FEDID__FEDERATION__SCHEME", "http")
            .env("FEDID__FEDERATION__ALLOW_PRIVATE_NETWORKS", "true")
            .env("FEDID__DATABASE__URL", db_url)
            .env("FEDID__LOG__LEVEL", "error")
            .env("FEDID__LIMITS__INBOX_MESSAGES_PER_USER", "100000000")
            .env("FEDID__LIMITS__INCOMING_REQUESTS_PER_USER", "100000000");
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// Runs `fedid-server user create` against this server's database; returns the token.
    pub fn create_user(&self) -> Result<String, String> {
        let out = Self::base_command(&self.binary, self.port, &self.db_url, &self.env)
            .args(["user", "create"])
            .output()
            .map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        value["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "user create printed no token".to_owned())
    }

    pub fn domain(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A number from the process's /proc status (`VmRSS:`, `Threads:`...).
    fn status_field(&self, name: &str) -> f64 {
        // prlimit execs the server in place: the child's pid is the server's.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// (current RSS, peak RSS) in MiB, from /proc.
    pub fn rss_mb(&self) -> (f64, f64) {
        (
            self.status_field("VmRSS:") / 1024.0,
            self.status_field("VmHWM:") / 1024.0,
        )
    }

    /// CPU seconds the process has used, user and system (`/proc/PID/stat`,
    /// in clock ticks of 1/100 s).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.child.id())
    }

    /// The process's threads now.
    pub fn threads(&self) -> usize {
        self.status_field("Threads:") as usize
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, empty schema `{prefix}_{name}_{pid}` on the PostgreSQL at
/// `base`; returns the URL whose connections use it (the store tests sweep
/// `fedid_test_` and `fedid_bench_` schemas of earlier runs).
pub fn fresh_postgres_schema(base: &str, prefix: &str, name: &str) -> Result<String, String> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let schema = format!("{prefix}_{name}_{}", std::process::id());
    let mut admin = diesel::PgConnection::establish(base).map_err(|e| format!("PostgreSQL: {e}"))?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .map_err(|e| e.to_string())?;
    let separator = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{separator}options=-csearch_path%3D{schema}"))
}

/// CPU seconds (user and system, every thread's, those gone included) that
/// process `pid` has used so far.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}
