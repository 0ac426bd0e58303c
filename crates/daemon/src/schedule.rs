//! A guest's timing policy beside idleness: how long it may sleep (`max_sleep`) and its
//! awake windows (`awake_during`, in its `timezone`), read from the clock in that zone.

use std::time::Duration;

use jiff::tz::TimeZone;
use tracing::warn;
use vmnap_config::{AwakeWindows, Config, GuestConfig};

/// What the worker keeps of a guest's timing policy; a reload hands it a new one.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Timing {
    /// How long it may sleep before it is woken.
    pub max_sleep: Option<Duration>,
    /// Its awake windows, if it has any (boxed: few guests do).
    pub awake: Option<Box<Awake>>,
}

impl Timing {
    /// `guest`'s, under `config`.
    pub(crate) fn of(guest: &GuestConfig, config: &Config) -> Self {
        let windows = guest.awake_during(&config.idle);
        let awake = (!windows.is_empty()).then(|| {
            Box::new(Awake::new(
                windows.clone(),
                guest.timezone(&config.idle).map(str::to_owned),
                &guest.name,
            ))
        });
        Timing {
            max_sleep: guest.max_sleep(&config.idle),
            awake,
        }
    }
}

/// Awake windows and the time zone they are read in.
#[derive(Debug, Clone)]
pub(crate) struct Awake {
    windows: AwakeWindows,
    /// The zone's name as the config gives it; `None`: the host's.
    zone: Option<String>,
    tz: TimeZone,
}

impl PartialEq for Awake {
    fn eq(&self, other: &Self) -> bool {
        (&self.windows, &self.zone) == (&other.windows, &other.zone)
    }
}

impl Awake {
    fn new(windows: AwakeWindows, zone: Option<String>, guest: &str) -> Self {
        let tz = match &zone {
            // The config checked the name; a tz database changed since is said, and UTC used.
            Some(name) => TimeZone::get(name).unwrap_or_else(|e| {
                warn!(guest, zone = %name, error = %e, "cannot read the time zone of the guest's awake windows; reading them in UTC");
                TimeZone::UTC
            }),
            None => TimeZone::system(),
        };
        Awake { windows, zone, tz }
    }

    /// The weekday (0: Monday) and second of the day in the windows' zone now.
    fn now(&self) -> (u8, u32) {
        let z = jiff::Timestamp::now().to_zoned(self.tz.clone());
        let second = u32::from(z.hour().unsigned_abs()) * 3600
            + u32::from(z.minute().unsigned_abs()) * 60
            + u32::from(z.second().unsigned_abs());
        (z.weekday().to_monday_zero_offset().unsigned_abs(), second)
    }

    /// Whether it is in one of its windows now.
    pub(crate) fn contains_now(&self) -> bool {
        let (day, second) = self.now();
        self.windows.contains(day, second)
    }

    /// How long until one of its windows starts next (a window that starts this very second
    /// is not found again). Each start is placed on the calendar in the zone, so a day whose
    /// clocks change is counted right; a start that day skips (a gap of summer time) is taken
    /// as the moment after the gap.
    pub(crate) fn next_start(&self) -> Option<Duration> {
        self.next_start_from(jiff::Timestamp::now())
    }

    fn next_start_from(&self, now: jiff::Timestamp) -> Option<Duration> {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut next: Option<jiff::Timestamp> = None;
        for ahead in 0..=7i64 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(ahead)) else {
                continue;
            };
            let day = date.weekday().to_monday_zero_offset().unsigned_abs();
            for w in self.windows.0.iter().filter(|w| w.days.has(day)) {
                let (h, m, sec) = (w.start / 3600, w.start / 60 % 60, w.start % 60);
                let at = date.at(h as i8, m as i8, sec as i8, 0);
                let Ok(zoned) = self.tz.to_ambiguous_zoned(at).compatible() else {
                    continue;
                };
                let ts = zoned.timestamp();
                if ts > now && next.is_none_or(|n| ts < n) {
                    next = Some(ts);
                }
            }
        }
        let ahead = next?.duration_since(now);
        Some(Duration::from_nanos(
            u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmnap_config::{Weekdays, Window};

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn the_next_start_is_placed_on_the_calendar_across_a_change_of_clocks() {
        let daily = |start: u32| {
            Awake::new(
                AwakeWindows(vec![Window {
                    days: Weekdays::ALL,
                    start,
                    end: start + 3600,
                }]),
                Some("Europe/Berlin".into()),
                "test",
            )
        };
        let nine = daily(9 * 3600);
        // An ordinary day: 12:00 to 09:00 the next day is 21 h.
        assert_eq!(
            nine.next_start_from(at("2026-03-20T11:00:00Z")),
            Some(Duration::from_secs(21 * 3600))
        );
        // The night clocks go forward (29 March 2026): 20 h.
        assert_eq!(
            nine.next_start_from(at("2026-03-28T11:00:00Z")),
            Some(Duration::from_secs(20 * 3600))
        );
        // A start in the gap (02:30 does not exist that night): the moment after it, 03:30
        // summer time, 01:30 UTC, 2 h 30 from midnight (23:00 UTC).
        assert_eq!(
            daily(2 * 3600 + 1800).next_start_from(at("2026-03-28T23:00:00Z")),
            Some(Duration::from_secs(2 * 3600 + 1800))
        );
    }
}
