//! The TCP echo service (port 7), an [`Application`] of the TCP responder: it sends back
//! every byte it reads, in order, and closes when the peer does.

use std::collections::VecDeque;

use crate::tcp::Application;

/// Echoed bytes not yet acknowledged at most; past it the service reads no more until the
/// peer catches up.
const BACKLOG: usize = 65_535;

/// One echo connection. It has no state of its own: the unacknowledged echo is the TCP
/// responder's send buffer.
#[derive(Debug, Default)]
pub(crate) struct Echo;

impl Application for Echo {
    fn window(&self, pending: usize) -> usize {
        BACKLOG.saturating_sub(pending)
    }

    fn receive(&mut self, data: &[u8], out: &mut VecDeque<u8>) -> bool {
        out.extend(data);
        false
    }
}
