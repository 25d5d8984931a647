//! Where results go: text for a person, or JSON with `--json`.

use std::io::Write;

use serde_json::Value;

use crate::error::Error;

/// Standard output in the mode the command line asked for. Writes are
/// checked (a closed pipe ends the command, see `Error::is_broken_pipe`)
/// and flushed per line, so `tail` shows each record as it comes.
pub(crate) struct Output {
    json: bool,
    out: std::io::Stdout,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            out: std::io::stdout(),
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// One line of text.
    pub(crate) fn line(&self, text: impl AsRef<str>) -> Result<(), Error> {
        let mut out = self.out.lock();
        writeln!(out, "{}", text.as_ref())?;
        out.flush()?;
        Ok(())
    }

    /// One JSON document on one line.
    pub(crate) fn value(&self, value: &Value) -> Result<(), Error> {
        self.line(value.to_string())
    }

    /// The result of a command: `value` with `--json`, else `text()`'s lines.
    pub(crate) fn result(&self, value: &Value, text: impl FnOnce() -> Vec<String>) -> Result<(), Error> {
        if self.json {
            return self.value(value);
        }
        for line in text() {
            self.line(line)?;
        }
        Ok(())
    }
}

/// A table with aligned columns, the last one left as it is.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line.trim_end().to_owned()
    };
    let mut lines = vec![render(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| render(row.iter().map(String::as_str).collect())),
    );
    lines
}

/// A duration for a person: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub(crate) fn human_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    let secs = duration.as_secs();
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", duration.as_secs_f64()),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, or the number when it is
/// out of range.
pub(crate) fn time_text(ms: i64) -> String {
    mes_events_types::Timestamp::from_unix_millis(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Bytes as text for a person: UTF-8 as is (lossily), cut after `max`
/// characters.
pub(crate) fn shown_bytes(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tables_align_every_column_but_the_last() {
        let lines = table(
            &["PREFIX", "KEYS", "NOTE"],
            &[
                vec!["part".into(), "12".into(), "x".into()],
                vec!["work_center".into(), "3".into(), String::new()],
            ],
        );
        assert_eq!(
            lines,
            [
                "PREFIX       KEYS  NOTE",
                "part         12    x",
                "work_center  3"
            ]
        );
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(human_duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(human_duration(Duration::from_secs(273_600)), "3d 04h");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(shown_bytes(b"abcdef", 3), "abc…");
        assert_eq!(shown_bytes(b"ab", 3), "ab");
        assert_eq!(shown_bytes(&[0xff, b'a'], 5), "\u{fffd}a");
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000Z");
    }
}
