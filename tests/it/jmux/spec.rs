//! A second, minimal JMUX codec from the spec text alone, so the library is not checked against itself.

use std::io::{Read, Write};
use std::net::TcpStream;

pub const OPEN: u8 = 100;
pub const OPEN_SUCCESS: u8 = 101;
pub const OPEN_FAILURE: u8 = 102;
pub const WINDOW_ADJUST: u8 = 103;
pub const DATA: u8 = 104;
pub const EOF: u8 = 105;
pub const CLOSE: u8 = 106;

/// One message: its type and the bytes after the 4-byte header.
pub struct Frame {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn word(&self, at: usize) -> u32 {
        let b = &self.body;
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    pub fn half(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.body[at], self.body[at + 1]])
    }
    pub fn tail(&self, at: usize) -> &[u8] {
        &self.body[at..]
    }
}

/// The spec's side of a tunnel: raw messages on a socket.
pub struct Peer(pub TcpStream);

impl Peer {
    pub fn send(&mut self, kind: u8, fields: &[&[u8]]) {
        let size = 4 + fields.iter().map(|f| f.len()).sum::<usize>();
        let size = u16::try_from(size).expect("test messages fit in a u16 size");
        let mut out = vec![kind];
        out.extend_from_slice(&size.to_be_bytes());
        out.push(0);
        for field in fields {
            out.extend_from_slice(field);
        }
        self.0
            .write_all(&out)
            .expect("the tunnel takes the message");
    }

    pub fn recv(&mut self) -> Frame {
        let mut head = [0; 4];
        self.0
            .read_exact(&mut head)
            .expect("a message header arrives");
        let size = usize::from(u16::from_be_bytes([head[1], head[2]]));
        assert!(size >= 4, "size {size} includes the header");
        assert_eq!(head[3], 0, "flags are sent as 0");
        let mut body = vec![0; size - 4];
        self.0
            .read_exact(&mut body)
            .expect("the message body arrives");
        Frame {
            kind: head[0],
            body,
        }
    }

    pub fn open(&mut self, id: u32, window: u32, max_packet: u16, destination: &str) {
        let fields: [&[u8]; 4] = [
            &id.to_be_bytes(),
            &window.to_be_bytes(),
            &max_packet.to_be_bytes(),
            destination.as_bytes(),
        ];
        self.send(OPEN, &fields);
    }

    pub fn open_success(&mut self, recipient: u32, id: u32, window: u32, max_packet: u16) {
        let fields: [&[u8]; 4] = [
            &recipient.to_be_bytes(),
            &id.to_be_bytes(),
            &window.to_be_bytes(),
            &max_packet.to_be_bytes(),
        ];
        self.send(OPEN_SUCCESS, &fields);
    }

    pub fn data(&mut self, recipient: u32, data: &[u8]) {
        self.send(DATA, &[&recipient.to_be_bytes(), data]);
    }

    pub fn adjust(&mut self, recipient: u32, increment: u32) {
        let fields: [&[u8]; 2] = [&recipient.to_be_bytes(), &increment.to_be_bytes()];
        self.send(WINDOW_ADJUST, &fields);
    }

    pub fn eof(&mut self, recipient: u32) {
        self.send(EOF, &[&recipient.to_be_bytes()]);
    }

    pub fn close(&mut self, recipient: u32) {
        self.send(CLOSE, &[&recipient.to_be_bytes()]);
    }
}
