//! Classic BPF socket filters, so that a passive capture copies to userspace only the few
//! frames it needs.

use std::io;
use std::os::fd::AsRawFd;

use crate::packet::PacketSocket;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    /// Operation.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: loads the packet type (`PACKET_OUTGOING` is 4).
const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
const PACKET_OUTGOING: u32 = 4;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Frames a bridge port sends to its guest (`PACKET_OUTGOING`) that the surrogate could
/// answer itself if the guest slept: ARP, ICMP, ICMPv6, and TCP (not fragmented) to one of
/// `tcp_ports`. Everything else stays in the kernel.
pub fn answerable_to_guest(tcp_ports: &[u16]) -> Vec<SockFilter> {
    // Built back to front would be easier for jumps; instead offsets are counted here, with
    // ACCEPT and DROP as the last two instructions.
    let ports = tcp_ports.len();
    let mut p = Vec::new();
    // The jump offsets below are relative to the next instruction.
    // Program layout:
    //  0 ld pkttype           1 jeq OUTGOING ? 2 : DROP
    //  2 ldh [12]             3 jeq ARP ? ACCEPT : 4
    //  4 jeq IPv4 ? 6 : 5     5 jeq IPv6 ? V6 : DROP
    //  V4: 6 ldb [23]  7 jeq ICMP ? ACCEPT : 8   8 jeq TCP ? 9 : DROP
    //      9 ldh [20]  10 jset 0x1fff ? DROP : 11  11 ldxb msh [14]  12 ldh [x+16]
    //      13.. jeq port_i ? ACCEPT : next ; then ja DROP (as jeq 0 never true -> DROP)
    //  V6: ldb [20]  jeq 58 ? ACCEPT : next  jeq 6 ? next : DROP  ldh [56]  jeq port_i ...
    //  ACCEPT: ret 0x40000   DROP: ret 0
    let v4_len = 7 + ports; // 6..=12 is 7 instructions, then one per port
    let v6_len = 4 + ports;
    let v4 = 6;
    let v6 = v4 + v4_len;
    let accept = v6 + v6_len;
    let drop = accept + 1;
    let to = |from: usize, target: usize| -> u8 {
        u8::try_from(target - from - 1).expect("BPF programs of vmnap are short")
    };
    p.push(ins(LD_W_ABS, 0, 0, AD_PKTTYPE)); // 0
    p.push(ins(JEQ_K, 0, to(1, drop), PACKET_OUTGOING)); // 1
    p.push(ins(LD_H_ABS, 0, 0, 12)); // 2
    p.push(ins(JEQ_K, to(3, accept), 0, 0x0806)); // 3
    p.push(ins(JEQ_K, to(4, v4), 0, 0x0800)); // 4
    p.push(ins(JEQ_K, to(5, v6), to(5, drop), 0x86dd)); // 5
                                                        // IPv4
    p.push(ins(LD_B_ABS, 0, 0, 14 + 9)); // 6
    p.push(ins(JEQ_K, to(7, accept), 0, 1)); // 7
                                             // TCP goes on to the port checks; with no port to accept it is dropped here.
    let tcp4 = if ports == 0 { to(8, drop) } else { 0 };
    p.push(ins(JEQ_K, tcp4, to(8, drop), 6)); // 8
    p.push(ins(LD_H_ABS, 0, 0, 14 + 6)); // 9
    p.push(ins(JSET_K, to(10, drop), 0, 0x1fff)); // 10
    p.push(ins(LDX_B_MSH, 0, 0, 14)); // 11
    p.push(ins(LD_H_IND, 0, 0, 14 + 2)); // 12
    for (i, port) in tcp_ports.iter().enumerate() {
        let at = 13 + i;
        let last = i + 1 == ports;
        let jf = if last { to(at, drop) } else { 0 };
        p.push(ins(JEQ_K, to(at, accept), jf, u32::from(*port)));
    }
    // IPv6
    let at = v6;
    p.push(ins(LD_B_ABS, 0, 0, 14 + 6)); // v6
    p.push(ins(JEQ_K, to(at + 1, accept), 0, 58)); // v6+1
    let tcp6 = if ports == 0 { to(at + 2, drop) } else { 0 };
    p.push(ins(JEQ_K, tcp6, to(at + 2, drop), 6)); // v6+2
    p.push(ins(LD_H_ABS, 0, 0, 14 + 40 + 2)); // v6+3
    for (i, port) in tcp_ports.iter().enumerate() {
        let at = v6 + 4 + i;
        let last = i + 1 == ports;
        let jf = if last { to(at, drop) } else { 0 };
        p.push(ins(JEQ_K, to(at, accept), jf, u32::from(*port)));
    }
    p.push(ins(RET_K, 0, 0, 0x0004_0000)); // accept
    p.push(ins(RET_K, 0, 0, 0)); // drop
    debug_assert_eq!(p.len(), drop + 1);
    p
}

/// TCP segments in either direction that open a connection (SYN), carry the end of a write
/// (PSH) or end a connection (FIN or RST), to any port; IPv4 fragments and IPv6 extension
/// headers aside. With these the daemon follows a guest's connections
/// (`vmnap_core::conntrack`) and which requests it has taken in and not answered
/// (`vmnap_core::inflight`): a request's last segment and an answer's carry PSH.
pub fn tcp_flow_events() -> Vec<SockFilter> {
    const FLAGS: u32 = 0x01 | 0x02 | 0x04 | 0x08; // FIN, SYN, RST, PSH
                                                  // 0 ldh [12]; 1 jeq IPv4 ? 2 : 8
                                                  // IPv4: 2 ldb [23]; 3 jeq TCP ? 4 : drop; 4 ldh [20]; 5 jset frag ? drop : 6;
                                                  //       6 ldxb 4*([14]&0xf); 7 ldb [x+27]; 8 jset FLAGS ? accept : drop
                                                  // IPv6: 9 ldh [12]; 10 jeq IPv6 ? 11 : drop; 11 ldb [20]; 12 jeq TCP ? 13 : drop;
                                                  //       13 ldb [67]; 14 jset FLAGS ? accept : drop
                                                  // 15 accept; 16 drop
    let (v6, accept, drop) = (9, 15, 16);
    let to = |from: usize, target: usize| -> u8 {
        u8::try_from(target - from - 1).expect("BPF programs of vmnap are short")
    };
    let p = vec![
        ins(LD_H_ABS, 0, 0, 12),
        ins(JEQ_K, to(1, 2), to(1, v6), 0x0800),
        ins(LD_B_ABS, 0, 0, 14 + 9),
        ins(JEQ_K, 0, to(3, drop), 6),
        ins(LD_H_ABS, 0, 0, 14 + 6),
        ins(JSET_K, to(5, drop), 0, 0x1fff),
        ins(LDX_B_MSH, 0, 0, 14),
        ins(0x50, 0, 0, 14 + 13), // ldb [x+27]: TCP flags
        ins(JSET_K, to(8, accept), to(8, drop), FLAGS),
        ins(LD_H_ABS, 0, 0, 12),
        ins(JEQ_K, 0, to(10, drop), 0x86dd),
        ins(LD_B_ABS, 0, 0, 14 + 6),
        ins(JEQ_K, 0, to(12, drop), 6),
        ins(LD_B_ABS, 0, 0, 14 + 40 + 13),
        ins(JSET_K, to(14, accept), to(14, drop), FLAGS),
        ins(RET_K, 0, 0, 0x0004_0000),
        ins(RET_K, 0, 0, 0),
    ];
    debug_assert_eq!(p.len(), drop + 1);
    p
}

/// The frames that say which addresses a guest has: its own ARP and ICMPv6 (neighbour
/// solicitations and advertisements among them; not `PACKET_OUTGOING`), and the DHCP server's
/// answers to it (IPv4 UDP to port 68, `PACKET_OUTGOING`, not fragmented).
pub fn guest_addresses() -> Vec<SockFilter> {
    // 0 ld pkttype; 1 jeq OUTGOING ? 7 : 2
    // from the guest: 2 ldh [12]; 3 jeq ARP ? accept : 4; 4 jeq IPv6 ? 5 : drop;
    //                 5 ldb [20]; 6 jeq ICMPv6 ? accept : drop
    // to the guest:   7 ldh [12]; 8 jeq IPv4 ? 9 : drop; 9 ldb [23]; 10 jeq UDP ? 11 : drop;
    //                 11 ldh [20]; 12 jset frag ? drop : 13; 13 ldxb 4*([14]&0xf);
    //                 14 ldh [x+16]; 15 jeq 68 ? accept : drop
    // 16 accept; 17 drop
    let (to_guest, accept, drop) = (7, 16, 17);
    let to = |from: usize, target: usize| -> u8 {
        u8::try_from(target - from - 1).expect("BPF programs of vmnap are short")
    };
    let p = vec![
        ins(LD_W_ABS, 0, 0, AD_PKTTYPE),
        ins(JEQ_K, to(1, to_guest), 0, PACKET_OUTGOING),
        ins(LD_H_ABS, 0, 0, 12),
        ins(JEQ_K, to(3, accept), 0, 0x0806),
        ins(JEQ_K, 0, to(4, drop), 0x86dd),
        ins(LD_B_ABS, 0, 0, 14 + 6),
        ins(JEQ_K, to(6, accept), to(6, drop), 58),
        ins(LD_H_ABS, 0, 0, 12),
        ins(JEQ_K, 0, to(8, drop), 0x0800),
        ins(LD_B_ABS, 0, 0, 14 + 9),
        ins(JEQ_K, 0, to(10, drop), 17),
        ins(LD_H_ABS, 0, 0, 14 + 6),
        ins(JSET_K, to(12, drop), 0, 0x1fff),
        ins(LDX_B_MSH, 0, 0, 14),
        ins(LD_H_IND, 0, 0, 14 + 2),
        ins(JEQ_K, to(15, accept), to(15, drop), 68),
        ins(RET_K, 0, 0, 0x0004_0000),
        ins(RET_K, 0, 0, 0),
    ];
    debug_assert_eq!(p.len(), drop + 1);
    p
}

impl PacketSocket {
    /// Attaches a classic BPF filter (`SO_ATTACH_FILTER`): the socket then receives only the
    /// frames the program accepts.
    pub fn attach_filter(&self, program: &[SockFilter]) -> io::Result<()> {
        let prog = SockFprog {
            len: u16::try_from(program.len())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            filter: program.as_ptr(),
        };
        // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const SockFprog).cast(),
                std::mem::size_of::<SockFprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A program that accepts what `a` or `b` accepts: `a` runs first, and each of its drops
/// (`ret 0`) becomes a jump to `b`. Both must end their paths in `ret` (as every program
/// here does), and `a`'s accepting `ret`s keep their snap length.
pub fn either(a: &[SockFilter], b: &[SockFilter]) -> Vec<SockFilter> {
    const JA: u16 = 0x05; // BPF_JMP | BPF_JA
    let mut p: Vec<SockFilter> = a
        .iter()
        .enumerate()
        .map(|(i, ins)| {
            if ins.code == RET_K && ins.k == 0 {
                let to_b = u32::try_from(a.len() - i - 1).expect("BPF programs of vmnap are short");
                SockFilter {
                    code: JA,
                    jt: 0,
                    jf: 0,
                    k: to_b,
                }
            } else {
                *ins
            }
        })
        .collect();
    p.extend_from_slice(b);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        for ports in [&[][..], &[8080], &[80, 8080, 9000]] {
            let p = answerable_to_guest(ports);
            for (i, f) in p.iter().enumerate() {
                if f.code == JEQ_K || f.code == JSET_K {
                    assert!(i + 1 + usize::from(f.jt) < p.len(), "{ports:?}: jt of {i}");
                    assert!(i + 1 + usize::from(f.jf) < p.len(), "{ports:?}: jf of {i}");
                }
            }
            assert_eq!(p.last().map(|f| (f.code, f.k)), Some((RET_K, 0)));
        }
    }
}
