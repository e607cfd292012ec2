//! A lean HTTP/1.1 keep-alive client for load: a request is a few writes
//! and reads on a socket, so the load generator takes as little of the
//! machine's CPU from the server as it can.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub struct Connection {
    port: u16,
    reader: Option<BufReader<TcpStream>>,
}

/// (port, path) of `http://127.0.0.1:PORT/path`.
pub fn split_url(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://127.0.0.1:")?;
    let slash = rest.find('/')?;
    Some((rest[..slash].parse().ok()?, rest[slash..].to_owned()))
}

impl Connection {
    pub fn new(port: u16) -> Self {
        Self { port, reader: None }
    }

    /// Sends one request; reconnects once if the kept-alive socket was closed.
    pub fn send(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<u16> {
        match self.try_send(method, path, token, body) {
            Ok(status) => Ok(status),
            Err(_) => {
                self.reader = None;
                self.try_send(method, path, token, body)
            }
        }
    }

    fn try_send(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<u16> {
        if self.reader.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_nodelay(true)?;
            self.reader = Some(BufReader::new(stream));
        }
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.as_bytes());
        reader.get_mut().write_all(&request)?;

        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut sink = vec![0; length];
        reader.read_exact(&mut sink)?;
        if close {
            self.reader = None;
        }
        Ok(status)
    }
}
