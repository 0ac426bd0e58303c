//! The responder's eBPF program, as a listing, for each of its three hooks.
//!
//! Registers, for the whole program: `r6` the context (the `__sk_buff` of a tc program;
//! unused in XDP), `r7` the frame's first byte, `r8` one past the last byte the program may
//! read directly (every load and store is checked against it first, as the verifier
//! insists), `r9` the guest's map entry once looked up; `r1` to `r5` are scratch and lost at
//! each helper call. The looked-up IPv4 address sits on the stack at `fp - 4`, the map's
//! key.
//!
//! Every exit but the two answers passes the frame on (`XDP_PASS`, or `TCX_NEXT`, which
//! lets any later tc program run): when in doubt, the frame goes on to the daemon's capture
//! socket and the userspace surrogate decides.
//!
//! Where the hooks differ:
//! - A tc program sees a VLAN tag that the kernel carries beside the frame
//!   (`__sk_buff.vlan_present`), and passes such a frame on; XDP cannot.
//! - An skb's bytes need not all be in its linear part, which is all a tc program reads
//!   directly: where the headers are not, it pulls them in (`bpf_skb_pull_data`), and it
//!   checks an IP packet's length against the whole frame (`__sk_buff.len`). An XDP frame
//!   is all linear.
//! - The answer: XDP sends the frame back out of the interface (`XDP_TX`); the tc program,
//!   run as the veth's peer is about to send the request to the interface, redirects the
//!   reply into the peer's receive path (`bpf_redirect` with `BPF_F_INGRESS`), as if the
//!   interface had sent it; the tc program on a bridge port's ingress sends the reply back
//!   out of the port it runs on (`bpf_redirect` to `__sk_buff.ifindex`, no flag).

use super::asm::{Alu, Asm, Cond, Insn, Size, R0, R1, R10, R2, R3, R4, R6, R7, R8, R9};
use super::{Entry, ANSWER_ARP, ANSWER_ECHO};

/// `enum xdp_action`.
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;
/// `TCX_NEXT` (`TC_ACT_UNSPEC`): not this program's business, on to the next (or the
/// stack).
pub(crate) const TCX_NEXT: i32 = -1;
/// `TC_ACT_REDIRECT`, which `bpf_redirect` returns.
pub(crate) const TC_ACT_REDIRECT: u32 = 7;

/// `BPF_FUNC_map_lookup_elem`: `r0 = &value` or NULL, for `r1 = map`, `r2 = &key`.
const MAP_LOOKUP_ELEM: i32 = 1;
/// `BPF_FUNC_redirect`: `r0 = TC_ACT_REDIRECT`, for `r1 = ifindex`, `r2 = flags`.
const REDIRECT: i32 = 23;
/// `BPF_FUNC_skb_pull_data`: `r0 = 0` once `r2` bytes of `r1`'s skb are linear and
/// writable; every packet pointer is stale after it.
const SKB_PULL_DATA: i32 = 39;
/// `bpf_redirect`'s flag: into the interface's receive path, not out of it.
const BPF_F_INGRESS: i32 = 1;

// `struct xdp_md`: the verifier rewrites these 32-bit loads into the frame's pointers.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;

// `struct __sk_buff`.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// XDP, generic mode: answers go back out of the interface.
    Xdp,
    /// tc, on the egress of a veth whose peer is the interface: answers go into the
    /// receive path of `ifindex`, the veth the program runs on.
    TcEgress { ifindex: u32 },
    /// tc, on the ingress of a bridge's port: answers go back out of the port they came
    /// in by, before the bridge sees the request.
    TcIngress,
}

// Ethernet.
const ETH_DST: i16 = 0;
const ETH_SRC: i16 = 6;
const ETH_TYPE: i16 = 12;
const ETH_LEN: i16 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;

// ARP for IPv4 over Ethernet, from the start of the frame.
const ARP_HTYPE: i16 = ETH_LEN;
const ARP_PTYPE: i16 = ETH_LEN + 2;
const ARP_HLEN: i16 = ETH_LEN + 4;
const ARP_PLEN: i16 = ETH_LEN + 5;
const ARP_OPER: i16 = ETH_LEN + 6;
const ARP_SHA: i16 = ETH_LEN + 8;
const ARP_SPA: i16 = ETH_LEN + 14;
const ARP_THA: i16 = ETH_LEN + 18;
const ARP_TPA: i16 = ETH_LEN + 24;
const ARP_END: i16 = ETH_LEN + 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

// IPv4 without options, from the start of the frame.
const IP_VER_IHL: i16 = ETH_LEN;
const IP_TOS: i16 = ETH_LEN + 1;
const IP_TOT_LEN: i16 = ETH_LEN + 2;
const IP_ID: i16 = ETH_LEN + 4;
const IP_FRAG: i16 = ETH_LEN + 6;
const IP_TTL: i16 = ETH_LEN + 8;
const IP_PROTO: i16 = ETH_LEN + 9;
const IP_CSUM: i16 = ETH_LEN + 10;
const IP_SRC: i16 = ETH_LEN + 12;
const IP_DST: i16 = ETH_LEN + 16;
const IP_LEN: i16 = 20;
const IP_PROTO_ICMP: i32 = 1;
/// Flags and fragment offset: MF and the offset (DF and the reserved bit aside).
const IP_MF_OFFSET: u16 = 0x3fff;
const IP_DF: u16 = 0x4000;
/// The TTL of the surrogate's IP packets, as a Linux guest sends them.
const TTL: i32 = 64;

// ICMP echo, from the start of the frame.
const ICMP_TYPE: i16 = ETH_LEN + IP_LEN;
const ICMP_CODE: i16 = ICMP_TYPE + 1;
const ICMP_CSUM: i16 = ICMP_TYPE + 2;
const ICMP_END: i16 = ICMP_TYPE + 8;
const ICMP_ECHO_REQUEST: i32 = 8;
const ICMP_ECHO_REPLY: i32 = 0;

// The map's value (`Entry`).
const ENTRY_MAC: i16 = std::mem::offset_of!(Entry, mac) as i16;
const ENTRY_FLAGS: i16 = std::mem::offset_of!(Entry, flags) as i16;
const ENTRY_ARP: i16 = std::mem::offset_of!(Entry, arp_answers) as i16;
const ENTRY_ECHO: i16 = std::mem::offset_of!(Entry, echo_answers) as i16;

/// The key's place on the stack.
const KEY: i16 = -4;

/// `v` as a 16-bit load from the frame reads it: network order seen as a host number.
fn net16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// The responder for `hook`, with `map_fd` as its map of sleeping guests.
pub(crate) fn build(map_fd: i32, hook: Hook) -> Vec<Insn> {
    let mut a = Asm::new();
    match hook {
        Hook::Xdp => {
            a.push([
                Insn::ldx_w(R7, R1, MD_DATA),
                Insn::ldx_w(R8, R1, MD_DATA_END),
            ]);
        }
        Hook::TcEgress { .. } | Hook::TcIngress => {
            // A tag beside the frame: the request belongs to a VLAN.
            a.push([
                Insn::mov64_reg(R6, R1),
                Insn::ldx_w(R3, R6, SKB_VLAN_PRESENT),
            ])
            .jne_imm(R3, 0, "pass");
            load_pointers(&mut a);
        }
    }
    need(&mut a, hook, ETH_LEN, ["have_eth", "pull_eth"]);
    // 802.1Q and 802.1ad tags (0x8100, 0x88a8), and every other type, go to userspace.
    a.push([Insn::ldx_h(R3, R7, ETH_TYPE)])
        .jeq_imm(R3, net16(ETH_P_ARP), "arp")
        .jeq_imm(R3, net16(ETH_P_IP), "ipv4")
        .ja("pass");
    arp(&mut a, map_fd, hook);
    echo(&mut a, map_fd, hook);
    a.label("pass");
    match hook {
        Hook::Xdp => a.push([Insn::mov64_imm(R0, XDP_PASS as i32), Insn::exit()]),
        Hook::TcEgress { .. } | Hook::TcIngress => {
            a.push([Insn::mov64_imm(R0, TCX_NEXT), Insn::exit()])
        }
    };
    a.finish()
        .expect("the responder's listing is well-formed (a unit test assembles it)")
}

/// `r7` and `r8` from the `__sk_buff` in `r6`: the start and end of its linear part.
fn load_pointers(a: &mut Asm) {
    a.push([
        Insn::ldx_w(R7, R6, SKB_DATA),
        Insn::ldx_w(R8, R6, SKB_DATA_END),
    ]);
}

/// An ARP request for a sleeping guest's address becomes the guest's reply, in place.
fn arp(a: &mut Asm, map_fd: i32, hook: Hook) {
    a.label("arp");
    need(a, hook, ARP_END, ["have_arp", "pull_arp"]);
    // Ethernet and IPv4, request.
    a.push([Insn::ldx_h(R3, R7, ARP_HTYPE)])
        .jne_imm(R3, net16(1), "pass")
        .push([Insn::ldx_h(R3, R7, ARP_PTYPE)])
        .jne_imm(R3, net16(ETH_P_IP), "pass")
        .push([Insn::ldx_b(R3, R7, ARP_HLEN)])
        .jne_imm(R3, 6, "pass")
        .push([Insn::ldx_b(R3, R7, ARP_PLEN)])
        .jne_imm(R3, 4, "pass")
        .push([Insn::ldx_h(R3, R7, ARP_OPER)])
        .jne_imm(R3, net16(ARP_REQUEST), "pass");
    // A gratuitous ARP announces the sender's own address: not a question. A probe (from
    // 0.0.0.0) is one, and is answered.
    a.push([Insn::ldx_w(R3, R7, ARP_SPA), Insn::ldx_w(R4, R7, ARP_TPA)])
        .jmp_reg(Cond::Eq, R3, R4, "pass")
        .push([Insn::stx(Size::W, R10, KEY, R4)]);
    lookup(a, map_fd, ANSWER_ARP);
    // To everyone, or to the guest.
    for off in [0, 2, 4] {
        a.push([Insn::ldx_h(R3, R7, ETH_DST + off)])
            .jne_imm(R3, 0xffff, "arp_unicast");
    }
    a.ja("arp_to_guest").label("arp_unicast");
    mac_diff(a, ETH_DST);
    a.jne_imm(R3, 0, "pass").label("arp_to_guest");
    // The reply, in place: to the asker (as the ARP body names it), from the guest.
    a.push([
        // The asker's MAC: the reply's target and its Ethernet destination.
        Insn::ldx_w(R3, R7, ARP_SHA),
        Insn::ldx_h(R4, R7, ARP_SHA + 4),
        Insn::stx(Size::W, R7, ARP_THA, R3),
        Insn::stx(Size::H, R7, ARP_THA + 4, R4),
        Insn::stx(Size::W, R7, ETH_DST, R3),
        Insn::stx(Size::H, R7, ETH_DST + 4, R4),
        // The asker's address becomes the target's; the guest's the sender's.
        Insn::ldx_w(R3, R7, ARP_SPA),
        Insn::stx(Size::W, R7, ARP_TPA, R3),
        Insn::ldx_w(R3, R10, KEY),
        Insn::stx(Size::W, R7, ARP_SPA, R3),
        // The guest's MAC: the sender's and the Ethernet source.
        Insn::ldx_w(R3, R9, ENTRY_MAC),
        Insn::ldx_h(R4, R9, ENTRY_MAC + 4),
        Insn::stx(Size::W, R7, ARP_SHA, R3),
        Insn::stx(Size::H, R7, ARP_SHA + 4, R4),
        Insn::stx(Size::W, R7, ETH_SRC, R3),
        Insn::stx(Size::H, R7, ETH_SRC + 4, R4),
        Insn::st(Size::H, R7, ARP_OPER, net16(ARP_REPLY)),
    ]);
    answer(a, map_fd, hook, ENTRY_ARP, "arp_sent");
}

/// An ICMP echo request to a sleeping guest becomes the guest's echo reply, in place.
fn echo(a: &mut Asm, map_fd: i32, hook: Hook) {
    a.label("ipv4");
    need(a, hook, ICMP_END, ["have_icmp", "pull_icmp"]);
    // Version 4, a 20-byte header (options go to userspace).
    a.push([Insn::ldx_b(R3, R7, IP_VER_IHL)])
        .jne_imm(R3, 0x45, "pass");
    // A total length that the frame holds, and that holds the echo header.
    a.push([
        Insn::ldx_h(R3, R7, IP_TOT_LEN),
        Insn::be16(R3),
        Insn::alu64_imm(Alu::And, R3, 0xffff),
    ])
    .jmp_imm(Cond::Lt, R3, i32::from(IP_LEN + 8), "pass");
    match hook {
        Hook::Xdp => a
            .push([
                Insn::mov64_reg(R4, R7),
                Insn::alu64_reg(Alu::Add, R4, R3),
                Insn::alu64_imm(Alu::Add, R4, i32::from(ETH_LEN)),
            ])
            .jmp_reg(Cond::Gt, R4, R8, "pass"),
        // The payload may lie outside the linear part: the whole frame's length counts.
        Hook::TcEgress { .. } | Hook::TcIngress => a
            .push([
                Insn::mov64_reg(R4, R3),
                Insn::alu64_imm(Alu::Add, R4, i32::from(ETH_LEN)),
                Insn::ldx_w(R2, R6, SKB_LEN),
            ])
            .jmp_reg(Cond::Gt, R4, R2, "pass"),
    };
    // Whole (no fragment), ICMP.
    a.push([
        Insn::ldx_h(R3, R7, IP_FRAG),
        Insn::alu64_imm(Alu::And, R3, net16(IP_MF_OFFSET)),
    ])
    .jne_imm(R3, 0, "pass")
    .push([Insn::ldx_b(R3, R7, IP_PROTO)])
    .jne_imm(R3, IP_PROTO_ICMP, "pass");
    // A header whose checksum holds: the ones' complement sum of its words is all ones.
    ip_header_sum(a);
    a.jne_imm(R3, 0xffff, "pass");
    // An echo request.
    a.push([Insn::ldx_b(R3, R7, ICMP_TYPE)])
        .jne_imm(R3, ICMP_ECHO_REQUEST, "pass")
        .push([Insn::ldx_b(R3, R7, ICMP_CODE)])
        .jne_imm(R3, 0, "pass");
    a.push([
        Insn::ldx_w(R3, R7, IP_DST),
        Insn::stx(Size::W, R10, KEY, R3),
    ]);
    lookup(a, map_fd, ANSWER_ECHO);
    // Sent to the guest's MAC.
    mac_diff(a, ETH_DST);
    a.jne_imm(R3, 0, "pass");
    a.push([
        // Back to the sender's MAC, from the guest's.
        Insn::ldx_w(R3, R7, ETH_SRC),
        Insn::ldx_h(R4, R7, ETH_SRC + 4),
        Insn::stx(Size::W, R7, ETH_DST, R3),
        Insn::stx(Size::H, R7, ETH_DST + 4, R4),
        Insn::ldx_w(R3, R9, ENTRY_MAC),
        Insn::ldx_h(R4, R9, ENTRY_MAC + 4),
        Insn::stx(Size::W, R7, ETH_SRC, R3),
        Insn::stx(Size::H, R7, ETH_SRC + 4, R4),
        // The IP header the userspace surrogate writes: no DSCP or ECN, ID 0, DF, TTL 64,
        // the addresses swapped, the checksum computed afresh.
        Insn::st(Size::B, R7, IP_TOS, 0),
        Insn::st(Size::H, R7, IP_ID, 0),
        Insn::st(Size::H, R7, IP_FRAG, net16(IP_DF)),
        Insn::st(Size::B, R7, IP_TTL, TTL),
        Insn::ldx_w(R3, R7, IP_SRC),
        Insn::ldx_w(R4, R7, IP_DST),
        Insn::stx(Size::W, R7, IP_SRC, R4),
        Insn::stx(Size::W, R7, IP_DST, R3),
        Insn::st(Size::H, R7, IP_CSUM, 0),
    ]);
    ip_header_sum(a);
    a.push([
        Insn::alu64_imm(Alu::Xor, R3, 0xffff),
        Insn::stx(Size::H, R7, IP_CSUM, R3),
    ]);
    // Echo reply; its checksum updated for the one word that changed (RFC 1624, eqn. 3:
    // HC' = ~(~HC + ~m + m'), with m the type and code of the request and m' = 0).
    let request = u16::from_ne_bytes([ICMP_ECHO_REQUEST as u8, 0]);
    a.push([
        Insn::st(Size::B, R7, ICMP_TYPE, ICMP_ECHO_REPLY),
        Insn::ldx_h(R3, R7, ICMP_CSUM),
        Insn::alu64_imm(Alu::Xor, R3, 0xffff),
        Insn::alu64_imm(Alu::Add, R3, i32::from(!request)),
    ]);
    fold(a);
    a.push([
        Insn::alu64_imm(Alu::Xor, R3, 0xffff),
        Insn::stx(Size::H, R7, ICMP_CSUM, R3),
    ]);
    answer(a, map_fd, hook, ENTRY_ECHO, "echo_sent");
}

/// Passes the frame unless its first `len` bytes can be read directly. A tc program pulls
/// them into the skb's linear part if need be (and reloads its pointers); `ok` and `pull`
/// name the labels past that and of the pull, unique to each call.
fn need(a: &mut Asm, hook: Hook, len: i16, [ok, pull]: [&'static str; 2]) {
    let check = |a: &mut Asm, fail: &'static str| {
        a.push([
            Insn::mov64_reg(R2, R7),
            Insn::alu64_imm(Alu::Add, R2, i32::from(len)),
        ])
        .jmp_reg(Cond::Gt, R2, R8, fail);
    };
    match hook {
        Hook::Xdp => check(a, "pass"),
        Hook::TcEgress { .. } | Hook::TcIngress => {
            check(a, pull);
            a.ja(ok).label(pull);
            a.push([Insn::ldx_w(R3, R6, SKB_LEN)])
                .jmp_imm(Cond::Lt, R3, i32::from(len), "pass")
                .push([
                    Insn::mov64_reg(R1, R6),
                    Insn::mov64_imm(R2, i32::from(len)),
                    Insn::call(SKB_PULL_DATA),
                ])
                .jne_imm(R0, 0, "pass");
            load_pointers(a);
            check(a, "pass");
            a.label(ok);
        }
    }
}

/// Looks up the key at `fp - 4` and keeps its entry in `r9`; passes the frame unless the
/// entry exists, has `flag` set, and the frame is not from the guest's own MAC.
fn lookup(a: &mut Asm, map_fd: i32, flag: u8) {
    a.push(Insn::ld_map_fd(R1, map_fd))
        .push([
            Insn::mov64_reg(R2, R10),
            Insn::alu64_imm(Alu::Add, R2, i32::from(KEY)),
            Insn::call(MAP_LOOKUP_ELEM),
        ])
        .jeq_imm(R0, 0, "pass")
        .push([
            Insn::mov64_reg(R9, R0),
            Insn::ldx_b(R3, R9, ENTRY_FLAGS),
            Insn::alu64_imm(Alu::And, R3, i32::from(flag)),
        ])
        .jeq_imm(R3, 0, "pass");
    // The guest's own frame (flooded back to the surrogate) is not a question to it.
    mac_diff(a, ETH_SRC);
    a.jeq_imm(R3, 0, "pass");
}

/// `r3` = zero if the frame's MAC at `at` is the guest's (`r9`), non-zero if not.
fn mac_diff(a: &mut Asm, at: i16) {
    a.push([
        Insn::ldx_w(R3, R7, at),
        Insn::ldx_w(R4, R9, ENTRY_MAC),
        Insn::alu64_reg(Alu::Xor, R3, R4),
        Insn::ldx_h(R4, R7, at + 4),
        Insn::ldx_h(R2, R9, ENTRY_MAC + 4),
        Insn::alu64_reg(Alu::Xor, R4, R2),
        Insn::alu64_reg(Alu::Or, R3, R4),
    ]);
}

/// `r3` = the ones' complement sum of the IPv4 header's ten words, folded to 16 bits. The
/// sum is the same in either byte order, so the words are added as they load.
fn ip_header_sum(a: &mut Asm) {
    a.push([Insn::ldx_h(R3, R7, ETH_LEN)]);
    for word in 1..IP_LEN / 2 {
        a.push([
            Insn::ldx_h(R4, R7, ETH_LEN + 2 * word),
            Insn::alu64_reg(Alu::Add, R3, R4),
        ]);
    }
    fold(a);
}

/// Folds the carries of `r3` into its low 16 bits (twice: the first fold can carry once
/// more), leaving a number below 0x10000.
fn fold(a: &mut Asm) {
    for _ in 0..2 {
        a.push([
            Insn::mov64_reg(R4, R3),
            Insn::alu64_imm(Alu::Rsh, R4, 16),
            Insn::alu64_imm(Alu::And, R3, 0xffff),
            Insn::alu64_reg(Alu::Add, R3, R4),
        ]);
    }
}

/// Counts the answer in the entry's counter at `counter`, and in the same counter of the
/// total (the entry of 0.0.0.0, an address no guest has: the daemon reads that one entry to
/// tell whether any answer was given), atomically, as the program runs on every CPU at
/// once; then sends the frame back out of the interface.
fn answer(a: &mut Asm, map_fd: i32, hook: Hook, counter: i16, sent: &'static str) {
    a.push([
        Insn::mov64_imm(R1, 1),
        Insn::atomic_add64(R9, counter, R1),
        Insn::st(Size::W, R10, KEY, 0),
    ])
    .push(Insn::ld_map_fd(R1, map_fd))
    .push([
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(Alu::Add, R2, i32::from(KEY)),
        Insn::call(MAP_LOOKUP_ELEM),
    ])
    .jeq_imm(R0, 0, sent)
    .push([Insn::mov64_imm(R1, 1), Insn::atomic_add64(R0, counter, R1)])
    .label(sent);
    match hook {
        Hook::Xdp => a.push([Insn::mov64_imm(R0, XDP_TX as i32), Insn::exit()]),
        Hook::TcEgress { ifindex } => a.push([
            // An index is below 2^31.
            Insn::mov64_imm(R1, ifindex as i32),
            Insn::mov64_imm(R2, BPF_F_INGRESS),
            Insn::call(REDIRECT),
            Insn::exit(),
        ]),
        Hook::TcIngress => a.push([
            Insn::ldx_w(R1, R6, SKB_IFINDEX),
            Insn::mov64_imm(R2, 0),
            Insn::call(REDIRECT),
            Insn::exit(),
        ]),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listings_assemble() {
        for hook in [Hook::Xdp, Hook::TcEgress { ifindex: 7 }, Hook::TcIngress] {
            let p = build(3, hook);
            assert!(p.len() > 100 && p.len() < 450, "{} instructions", p.len());
            assert_eq!(p.last(), Some(&Insn::exit()));
        }
    }

    #[test]
    fn checksum_folding_as_the_program_does_it_gives_rfc_1071_sums() {
        // The IPv4 header of a ping from 198.18.7.1 to 198.18.7.2, checksum 0x34f3.
        let header: [u8; 20] = [
            0x45, 0x00, 0x00, 0x54, 0x6b, 0x8e, 0x40, 0x00, 0x40, 0x01, 0x34, 0xf3, 0xc6, 0x12,
            0x07, 0x01, 0xc6, 0x12, 0x07, 0x02,
        ];
        let fold = |mut s: u64| {
            for _ in 0..2 {
                s = (s & 0xffff) + (s >> 16);
            }
            s
        };
        let sum = fold(
            header
                .chunks(2)
                .map(|w| u64::from(u16::from_ne_bytes([w[0], w[1]])))
                .sum(),
        );
        assert_eq!(sum, 0xffff, "the checksum holds, summed in host order");
    }
}
