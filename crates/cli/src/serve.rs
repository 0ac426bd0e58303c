//! `vmnap status --serve ADDR`: the daemon's status page on a TCP address, read from its
//! unix socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Serves the status page of the daemon on `socket` at `addr` until `stop` is set.
pub fn serve(socket: &Path, addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<()> {
    let _ = (socket, addr, stop);
    anyhow::bail!("not yet")
}
