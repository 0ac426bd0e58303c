//! Awake windows: ranges of weekdays and times of day in which a guest does not fall asleep
//! by idleness, and at whose start a sleeping guest is woken (`awake_during` in the config).
//!
//! Pure: a moment is a local weekday and second of the day, which the daemon reads from the
//! clock in the guest's time zone (the daemon places a window's next start on that zone's
//! calendar itself, so that a day whose clocks change is counted right). A window whose end is not after its start runs past
//! midnight into the next day: `Fri 22:00-06:00` is Friday night to Saturday morning.

use core::fmt;

/// Seconds in a day.
pub const DAY: u32 = 86_400;

/// A set of weekdays, Monday first (bit 0) to Sunday (bit 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Weekdays(u8);

/// The days' names, Monday first, as the config writes them.
pub const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Weekdays {
    /// Every day.
    pub const ALL: Weekdays = Weekdays(0x7f);

    /// No day.
    pub const fn none() -> Self {
        Weekdays(0)
    }

    /// With `day` (0: Monday, 6: Sunday; others are ignored).
    pub fn with(self, day: u8) -> Self {
        Weekdays(self.0 | (1 << (day % 7)))
    }

    /// Whether it has `day` (0: Monday).
    pub fn has(self, day: u8) -> bool {
        self.0 & (1 << (day % 7)) != 0
    }
}

/// One window: on each of its days, from `start` to `end` (seconds of the day; an `end` not
/// after `start` is on the next day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// The days it starts on.
    pub days: Weekdays,
    /// When it starts, in seconds of the day (below [`DAY`]).
    pub start: u32,
    /// When it ends, in seconds of the day (up to [`DAY`]); not after `start`: the next day.
    pub end: u32,
}

impl Window {
    /// Whether the moment `second` of weekday `day` (0: Monday) is in the window.
    pub fn contains(&self, day: u8, second: u32) -> bool {
        if self.start < self.end {
            self.days.has(day) && (self.start..self.end).contains(&second)
        } else {
            (self.days.has(day) && second >= self.start)
                || (self.days.has((day + 6) % 7) && second < self.end)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = (0..7u8)
            .filter(|&d| self.days.has(d))
            .map(|d| DAY_NAMES[usize::from(d)])
            .collect();
        let hm = |s: u32| match s % 60 {
            0 => format!("{:02}:{:02}", s / 3600, s / 60 % 60),
            sec => format!("{:02}:{:02}:{sec:02}", s / 3600, s / 60 % 60),
        };
        write!(f, "{} {}-{}", days.join(","), hm(self.start), hm(self.end))
    }
}

/// A guest's awake windows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AwakeWindows(pub Vec<Window>);

impl AwakeWindows {
    /// Whether the moment is in one of them.
    pub fn contains(&self, day: u8, second: u32) -> bool {
        self.0.iter().any(|w| w.contains(day, second))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u32 = 3600;

    fn days(list: &[u8]) -> Weekdays {
        list.iter().fold(Weekdays::none(), |w, &d| w.with(d))
    }

    #[test]
    fn a_day_window_holds_its_days_from_start_to_end() {
        // Mon-Fri 08:00-18:00.
        let w = Window {
            days: days(&[0, 1, 2, 3, 4]),
            start: 8 * H,
            end: 18 * H,
        };
        assert!(w.contains(0, 8 * H));
        assert!(w.contains(4, 18 * H - 1));
        assert!(!w.contains(4, 18 * H));
        assert!(!w.contains(5, 12 * H), "Saturday");
        assert!(!w.contains(2, 7 * H));
        assert_eq!(w.to_string(), "Mon,Tue,Wed,Thu,Fri 08:00-18:00");
    }

    #[test]
    fn a_night_window_runs_past_midnight_and_past_sunday() {
        // Sun 22:00-06:00: Sunday night into Monday morning.
        let w = Window {
            days: days(&[6]),
            start: 22 * H,
            end: 6 * H,
        };
        assert!(w.contains(6, 23 * H));
        assert!(w.contains(0, 5 * H));
        assert!(!w.contains(0, 6 * H));
        assert!(!w.contains(6, 5 * H), "Sunday morning is Saturday night's");
        let every = AwakeWindows(vec![
            w,
            Window {
                days: Weekdays::ALL,
                start: 12 * H,
                end: 12 * H + 60,
            },
        ]);
        assert!(every.contains(3, 12 * H + 30));
        assert!(!AwakeWindows::default().contains(0, 0));
    }
}
