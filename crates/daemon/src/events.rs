//! What happens to the guests, as a stream: [`Event`]s published on an [`EventBus`], kept in a
//! bounded buffer of recent events and broadcast to subscribers (`GET /v1/events`).
//!
//! Publishing never blocks: each subscriber has a bounded queue, and one that does not keep up
//! is dropped (its stream ends) rather than slowing the publisher down. A bridge worker may
//! hold a clone of the bus and publish from its thread.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use vmnap_api::{Event, Record};

/// How many recent events the bus keeps for new subscribers and `vmnap events`: this many of
/// the guests' changes (fell asleep, woke, backend errors, drops), and as many of the counts
/// of frames answered and queued, so that busy traffic never pushes the changes out.
pub const RECENT_EVENTS: usize = 256;
/// How many events a subscriber may fall behind before it is dropped.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// A broadcast of [`Event`]s to subscribers, with a bounded buffer of recent ones. Cheap to
/// clone; every clone is the same bus.
#[derive(Debug, Clone, Default)]
pub struct EventBus {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    recent: VecDeque<Record>,
    recent_traffic: VecDeque<Record>,
    subscribers: Vec<SyncSender<Record>>,
}

/// A subscriber's end of the bus. Its stream ends (`recv` fails with `Disconnected`) when the
/// bus drops it for falling behind by more than [`SUBSCRIBER_QUEUE`] events.
#[derive(Debug)]
pub struct Subscription {
    /// The events published after it subscribed.
    pub events: Receiver<Record>,
}

impl EventBus {
    /// A bus with nothing published yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A publisher that panicked left the buffer whole: each change is one push or pop.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `event` to every subscriber and keeps it among the recent ones. Never blocks;
    /// drops the subscribers whose queue is full or who have gone.
    pub fn publish(&self, event: Event) {
        let mut inner = self.lock();
        inner.seq += 1;
        let record = Record {
            seq: inner.seq,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            event,
        };
        inner
            .subscribers
            .retain(|s| match s.try_send(record.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("an event subscriber fell behind; dropping it");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        let ring = match record.event {
            Event::Answered { .. } | Event::Queued { .. } => &mut inner.recent_traffic,
            _ => &mut inner.recent,
        };
        if ring.len() == RECENT_EVENTS {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The recent events, oldest first (at most [`RECENT_EVENTS`] of each kind).
    pub fn recent(&self) -> Vec<Record> {
        self.lock().merged()
    }

    /// The recent events and a subscription to those published after them, with none lost or
    /// repeated between the two.
    pub fn subscribe(&self) -> (Vec<Record>, Subscription) {
        self.subscribe_with_queue(SUBSCRIBER_QUEUE)
    }

    /// As [`EventBus::subscribe`], with a queue of `queue` events.
    pub fn subscribe_with_queue(&self, queue: usize) -> (Vec<Record>, Subscription) {
        let (tx, rx) = mpsc::sync_channel(queue);
        let mut inner = self.lock();
        inner.subscribers.push(tx);
        let recent = inner.merged();
        (recent, Subscription { events: rx })
    }

    /// How many subscribers are attached.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

impl Inner {
    /// Both rings, in the order the events were published.
    fn merged(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self
            .recent
            .iter()
            .chain(&self.recent_traffic)
            .cloned()
            .collect();
        all.sort_by_key(|r| r.seq);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asleep(guest: &str) -> Event {
        Event::FellAsleep {
            guest: guest.into(),
        }
    }

    #[test]
    fn events_serialize_as_one_object_with_an_event_tag() {
        let record = Record {
            seq: 3,
            time_ms: 10,
            event: Event::Woke {
                guest: "web1".into(),
                cause: "tcp-syn".into(),
                frame: None,
                took_ms: Some(12.5),
            },
        };
        let text = serde_json::to_string(&record).expect("serializes");
        assert_eq!(
            text,
            r#"{"seq":3,"time_ms":10,"event":"woke","guest":"web1","cause":"tcp-syn","took_ms":12.5}"#
        );
        assert_eq!(
            serde_json::from_str::<Record>(&text).expect("parses"),
            record
        );
    }

    #[test]
    fn subscribers_get_what_is_published_after_the_recent_events() {
        let bus = EventBus::new();
        bus.publish(asleep("a"));
        let (recent, sub) = bus.subscribe();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].seq, 1);
        bus.publish(asleep("b"));
        let next = sub.events.try_recv().expect("published after subscribing");
        assert_eq!((next.seq, next.event.guest()), (2, "b"));
    }

    #[test]
    fn recent_events_are_bounded() {
        let bus = EventBus::new();
        for _ in 0..RECENT_EVENTS + 10 {
            bus.publish(asleep("a"));
        }
        let recent = bus.recent();
        assert_eq!(recent.len(), RECENT_EVENTS);
        assert_eq!(recent[0].seq, 11);
    }

    #[test]
    fn traffic_counts_never_push_changes_out_of_the_recent_events() {
        let bus = EventBus::new();
        bus.publish(asleep("a"));
        for _ in 0..RECENT_EVENTS * 3 {
            bus.publish(Event::Queued {
                guest: "a".into(),
                frames: 1,
            });
        }
        bus.publish(asleep("b"));
        let recent = bus.recent();
        assert_eq!(recent.len(), RECENT_EVENTS + 2);
        assert_eq!(recent[0].event, asleep("a"));
        assert_eq!(recent[recent.len() - 1].event, asleep("b"));
        assert!(recent.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn a_slow_subscriber_is_dropped_and_others_keep_receiving() {
        let bus = EventBus::new();
        let (_, slow) = bus.subscribe_with_queue(2);
        let (_, fast) = bus.subscribe_with_queue(100);
        for _ in 0..3 {
            bus.publish(asleep("a"));
        }
        assert_eq!(bus.subscribers(), 1);
        assert_eq!(slow.events.try_iter().count(), 2);
        assert!(slow.events.recv().is_err(), "the slow stream ends");
        assert_eq!(fast.events.try_iter().count(), 3);
    }

    #[test]
    fn a_gone_subscriber_is_forgotten() {
        let bus = EventBus::new();
        drop(bus.subscribe());
        bus.publish(asleep("a"));
        assert_eq!(bus.subscribers(), 0);
    }
}
