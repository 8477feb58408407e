//! The access log: one line per request, in the NCSA combined format (with farmgate's fields
//! appended) or as JSON, written by a dedicated thread so the request path never blocks on the
//! disk. When the writer falls behind, lines are dropped and counted rather than queued without
//! bound.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::config::{AccessLogFormat, AccessLogSettings};

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    inner: Option<Arc<Writer>>,
}

struct Writer {
    format: AccessLogFormat,
    tx: mpsc::Sender<String>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog { inner: None }
    }

    /// Opens the log as configured; the writer thread ends when the last handle is dropped.
    pub fn open(settings: &AccessLogSettings) -> std::io::Result<AccessLog> {
        if settings.format == AccessLogFormat::Off {
            return Ok(AccessLog::off());
        }
        let mut out: Box<dyn Write + Send> = match &settings.path {
            None => Box::new(std::io::stdout()),
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("farmgate-access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Some(line) = rx.blocking_recv() {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    while let Ok(line) = rx.try_recv() {
                        buf.extend_from_slice(line.as_bytes());
                        buf.push(b'\n');
                        if buf.len() > 60 * 1024 {
                            break;
                        }
                    }
                    if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                        tracing::error!("cannot write the access log; further lines are lost");
                        return;
                    }
                    buf.clear();
                }
            })?;
        Ok(AccessLog {
            inner: Some(Arc::new(Writer {
                format: settings.format,
                tx,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Lines lost because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |w| w.dropped.load(Ordering::Relaxed))
    }

    /// Starts a record for a request, when the log is on.
    pub fn record<B>(
        &self,
        req: &http::Request<B>,
        client: SocketAddr,
        start: Instant,
    ) -> Option<AccessRecord> {
        let writer = self.inner.as_ref()?;
        let header = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Some(AccessRecord {
            writer: Arc::clone(writer),
            start,
            time: SystemTime::now(),
            client,
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.to_string()),
            version: req.version(),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            status: 0,
            rule: None,
            farm: None,
            member: None,
            refused: None,
        })
    }

    /// Writes the line of a request refused before it could be read as one (the framing checks'
    /// refusals, answered 400 by hyper): no method or target, the status and the reason.
    pub fn refused(&self, client: SocketAddr, reason: &str) {
        let Some(writer) = self.inner.as_ref() else {
            return;
        };
        AccessRecord {
            writer: Arc::clone(writer),
            start: Instant::now(),
            time: SystemTime::now(),
            client,
            method: "-".into(),
            target: "-".into(),
            version: http::Version::HTTP_11,
            referer: None,
            user_agent: None,
            status: 400,
            rule: None,
            farm: None,
            member: None,
            refused: Some(reason.to_string()),
        }
        .write(0, true);
    }
}

/// What the access log says about one request; written when its response ends.
pub struct AccessRecord {
    writer: Arc<Writer>,
    start: Instant,
    time: SystemTime,
    client: SocketAddr,
    method: String,
    target: String,
    version: http::Version,
    referer: Option<String>,
    user_agent: Option<String>,
    pub status: u16,
    pub rule: Option<String>,
    pub farm: Option<String>,
    pub member: Option<String>,
    /// Why the request was refused unread, for those the framing checks refused.
    pub refused: Option<String>,
}

impl AccessRecord {
    /// Formats and queues the line; `complete` is false when the response was cut short.
    pub fn write(self, bytes: u64, complete: bool) {
        let line = match self.writer.format {
            AccessLogFormat::Json => self.json(bytes, complete),
            _ => self.combined(bytes, complete),
        };
        if self.writer.tx.try_send(line).is_err() {
            self.writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn combined(&self, bytes: u64, complete: bool) -> String {
        let q = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), escape);
        format!(
            "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" rule={} farm={} member={} ms={:.3}{}{}",
            self.client.ip(),
            clf_time(self.time),
            self.method,
            escape(&self.target),
            self.version,
            self.status,
            bytes,
            q(&self.referer),
            q(&self.user_agent),
            self.rule.as_deref().unwrap_or("-"),
            self.farm.as_deref().unwrap_or("-"),
            self.member.as_deref().unwrap_or("-"),
            self.start.elapsed().as_secs_f64() * 1000.0,
            if complete { "" } else { " aborted" },
            self.refused
                .as_deref()
                .map_or_else(String::new, |r| format!(" refused=\"{}\"", escape(r))),
        )
    }

    fn json(&self, bytes: u64, complete: bool) -> String {
        let secs = self
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut line = serde_json::json!({
            "time": secs,
            "client": self.client.ip().to_string(),
            "method": self.method,
            "target": self.target,
            "version": format!("{:?}", self.version),
            "status": self.status,
            "bytes": bytes,
            "referer": self.referer,
            "user_agent": self.user_agent,
            "rule": self.rule,
            "farm": self.farm,
            "member": self.member,
            "ms": self.start.elapsed().as_secs_f64() * 1000.0,
            "complete": complete,
        });
        if let (Some(r), Some(map)) = (&self.refused, line.as_object_mut()) {
            map.insert("refused".into(), r.as_str().into());
        }
        line.to_string()
    }
}

/// Escapes quotes, backslashes and control bytes so a line stays one parseable line.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `10/Oct/2000:13:55:36 +0000` (always UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_dates() {
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(clf_time(leap), "29/Feb/2024:00:00:00 +0000");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\x0ad");
    }
}
