//! Instants and the envelope's timestamp (PROTOCOL.md section 3).

use std::fmt;

/// An instant: nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i128);

impl UnixTime {
    /// Whole seconds since the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs as i128 * 1_000_000_000)
    }

    /// Nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i128 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000) as i64
    }

    /// `secs` later (earlier when negative).
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0 + secs as i128 * 1_000_000_000)
    }

    /// `millis` later.
    pub fn plus_millis(self, millis: u64) -> Self {
        Self(self.0 + millis as i128 * 1_000_000)
    }

    /// |self - other| in nanoseconds.
    pub fn distance_nanos(self, other: Self) -> u128 {
        self.0.abs_diff(other.0)
    }

    /// RFC 3339 in UTC with `Z`, to the second: how the server writes times.
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Reads what [`UnixTime::to_rfc3339`] writes (and any valid envelope timestamp).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        Timestamp::parse(text).ok().map(|t| t.instant())
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a timestamp is YYYY-MM-DDThh:mm:ss[.fraction] then Z or ±hh:mm, a real date and time")]
pub struct TimestampError;

/// An envelope timestamp: the text exactly as sent (it is signed) and the
/// instant it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    instant: UnixTime,
}

impl Timestamp {
    /// Reads a timestamp of section 3, keeping its text.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let instant = parse_instant(text.as_bytes()).ok_or(TimestampError)?;
        Ok(Self {
            text: text.to_owned(),
            instant,
        })
    }

    /// The timestamp a client would write for `instant`, in UTC.
    pub fn from_instant(instant: UnixTime) -> Self {
        Self {
            text: instant.to_rfc3339(),
            instant: UnixTime::from_secs(instant.as_secs()),
        }
    }

    /// The timestamp as written (and signed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant it names.
    pub fn instant(&self) -> UnixTime {
        self.instant
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')))
}

fn parse_instant(b: &[u8]) -> Option<UnixTime> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i128 = 0;
    if rest.first() == Some(&b'.') {
        let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&len) {
            return None;
        }
        let fraction = digits(&rest[1..=len])?;
        nanos = i128::from(fraction) * 10i128.pow(9 - len as u32);
        rest = &rest[1 + len..];
    }
    let offset_secs: i64 = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 || (*sign == b'-' && oh == 0 && om == 0) {
                return None;
            }
            let magnitude = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return None,
    };
    let local = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(UnixTime::from_nanos(
        i128::from(local - offset_secs) * 1_000_000_000 + nanos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_timestamps() {
        let base = Timestamp::parse("2026-11-27T10:15:00Z").unwrap().instant();
        assert_eq!(Timestamp::parse("2026-11-27T11:15:00+01:00").unwrap().instant(), base);
        assert_eq!(Timestamp::parse("2026-11-27T09:45:00-00:30").unwrap().instant(), base);
        assert_eq!(
            Timestamp::parse("2026-11-27T10:15:00.5Z").unwrap().instant().as_nanos() - base.as_nanos(),
            500_000_000
        );
        assert_eq!(
            Timestamp::parse("2026-11-27T10:15:00.123456789Z")
                .unwrap()
                .instant()
                .as_nanos()
                % 1_000_000_000,
            123_456_789
        );
        assert!(Timestamp::parse("2024-02-29T00:00:00Z").is_ok());
        assert!(Timestamp::parse("2000-02-29T00:00:00Z").is_ok());
        assert_eq!(base.to_rfc3339(), "2026-11-27T10:15:00Z");
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z").unwrap().instant().as_nanos(),
            0
        );
    }

    #[test]
    fn refuses_invalid_timestamps() {
        for bad in [
            "2026-11-27 10:15:00Z",
            "2026-11-27t10:15:00Z",
            "2026-11-27T10:15:00z",
            "2026-02-30T10:15:00Z",
            "2026-11-27T10:15:60Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:15:00-00:00",
            "2026-11-27T10:15:00+24:00",
            "2026-11-27T10:15:00+01:60",
            "2026-11-27T10:15:00.Z",
            "2026-11-27T10:15:00.1234567890Z",
            "2026-11-27T10:15:00",
            "2026-11-27T10:15:00+0100",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "+026-11-27T10:15:00Z",
            "2026-11-27T10:15:00Z ",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 59, 365, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
