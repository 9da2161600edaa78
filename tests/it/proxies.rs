//! Small HTTP CONNECT and SOCKS5 proxies for the tests: loopback, no auth, counting the tunnels they carried.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long a proxy waits on a silent client before dropping it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running test proxy: its URL and how many tunnels it opened.
pub struct TestProxy {
    pub url: String,
    tunnels: Arc<AtomicUsize>,
}

impl TestProxy {
    /// Tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }
}

/// An HTTP proxy that serves `CONNECT host:port` with `200`.
pub fn http_connect() -> TestProxy {
    serve("http", |client| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if client.read(&mut byte).ok()? != 1 || head.len() > 8192 {
                return None;
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8(head).ok()?;
        let target = text.strip_prefix("CONNECT ")?.split(' ').next()?.to_owned();
        let upstream = TcpStream::connect(target).ok()?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .ok()?;
        Some(upstream)
    })
}

/// A SOCKS5 proxy: no authentication, CONNECT to an IPv4 address or a name.
pub fn socks5() -> TestProxy {
    serve("socks5", |client| {
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).ok()?;
        let mut methods = vec![0u8; usize::from(greeting[1])];
        client.read_exact(&mut methods).ok()?;
        client.write_all(&[5, 0]).ok()?;
        let mut request = [0u8; 4];
        client.read_exact(&mut request).ok()?;
        let host = match request[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).ok()?;
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let mut len = [0u8; 1];
                client.read_exact(&mut len).ok()?;
                let mut name = vec![0u8; usize::from(len[0])];
                client.read_exact(&mut name).ok()?;
                String::from_utf8(name).ok()?
            }
            _ => return None,
        };
        let mut port = [0u8; 2];
        client.read_exact(&mut port).ok()?;
        let upstream = TcpStream::connect((host.as_str(), u16::from_be_bytes(port))).ok()?;
        client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).ok()?;
        Some(upstream)
    })
}

fn serve(
    scheme: &str,
    handshake: impl Fn(&mut TcpStream) -> Option<TcpStream> + Send + Sync + Copy + 'static,
) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let addr: SocketAddr = listener.local_addr().expect("a bound address");
    let tunnels = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&tunnels);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                let _ = client.set_read_timeout(Some(IO_TIMEOUT));
                let Some(upstream) = handshake(&mut client) else {
                    return;
                };
                let _ = client.set_read_timeout(None);
                counter.fetch_add(1, Ordering::SeqCst);
                splice(client, upstream);
            });
        }
    });
    TestProxy {
        url: format!("{scheme}://{addr}"),
        tunnels,
    }
}

/// Copies both ways, each EOF passed on as a write shutdown.
fn splice(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut client, mut upstream) = (client, upstream);
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Write);
}
