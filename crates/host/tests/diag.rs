//! `tcp_work` on real TCP connections over loopback, in a namespace the test makes.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::Netns;
use vmnap_host::diag::{tcp_work, tcp_work_in, TcpWork};

/// Long enough for the kernel's millisecond clocks of the last data sent and received to
/// tell two steps apart.
fn tick() {
    std::thread::sleep(Duration::from_millis(30));
}

#[test]
fn a_request_is_work_until_it_is_answered_and_the_answer_read() {
    let ns = Netns::new("diag");
    ns.ip(&["link", "set", "lo", "up"]);
    let recent = Duration::from_secs(10);
    ns.run(|| {
        assert!(
            tcp_work(recent).expect("dump").is_idle(),
            "a fresh namespace"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("address");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        // A second client, never accepted.
        let _waiting = TcpStream::connect(addr).expect("connect");
        tick();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
        tick();
        let unread = TcpWork {
            unread: 1,
            unaccepted: 1,
            ..TcpWork::default()
        };
        assert_eq!(tcp_work(recent).expect("dump"), unread);
        // Read, not answered yet: the peer spoke last.
        let mut request = [0u8; 18];
        server.read_exact(&mut request).expect("read");
        tick();
        let unanswered = TcpWork {
            unanswered: 1,
            unaccepted: 1,
            ..TcpWork::default()
        };
        assert_eq!(tcp_work(recent).expect("dump"), unanswered);
        // Answered: now the client has an answer to read.
        server
            .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
            .expect("answer");
        tick();
        assert_eq!(
            tcp_work(recent).expect("dump"),
            TcpWork {
                unread: 1,
                unaccepted: 1,
                ..TcpWork::default()
            }
        );
        let mut answer = [0u8; 19];
        client.read_exact(&mut answer).expect("read the answer");
        tick();
        assert_eq!(
            tcp_work(recent).expect("dump"),
            TcpWork {
                unaccepted: 1,
                ..TcpWork::default()
            }
        );
    });
}

#[test]
fn another_namespace_is_read_through_its_file() {
    let ns = Netns::new("diagin");
    ns.ip(&["link", "set", "lo", "up"]);
    let recent = Duration::from_secs(10);
    let (_listener, _client) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        (listener, client)
    });
    let file = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("netns file");
    let work = tcp_work_in(file, recent).expect("dump in the namespace");
    assert_eq!(
        work,
        TcpWork {
            unaccepted: 1,
            ..TcpWork::default()
        }
    );
}
