//! Client quotas enforced the way Kafka's `ClientQuotaManager` does: `producer_byte_rate`,
//! `consumer_byte_rate` and `request_percentage` per user / client-id.
//!
//! * **Which quota applies** (`resolve`): Kafka's documented precedence, per quota key:
//!   `/users/<user>/clients/<client-id>`, `/users/<user>/clients/<default>`, `/users/<user>`,
//!   `/users/<default>/clients/<client-id>`, `/users/<default>/clients/<default>`,
//!   `/users/<default>`, `/clients/<client-id>`, `/clients/<default>`. The entity that matched
//!   also decides who shares the budget: a quota on `/users/<default>` gives each user one
//!   bucket shared by all its client ids, `/clients/<id>` one bucket per client id, and so on.
//! * **Rate** (`Rate`): `quota.window.num` samples of `quota.window.size.seconds` each, a sample
//!   starting at the first value recorded after the previous one ended; the rate is the sum of
//!   the live samples divided by the elapsed time, but never less than `num - 1` windows
//!   (Kafka's `Rate.windowSize`).
//! * **Throttle**: after recording, if the rate is above the quota the client must wait
//!   `(rate - quota) / quota * window` ms (the time that brings the rate back to the quota),
//!   at most `num` windows (a bound against absurd values after a quota is lowered; a smaller
//!   bound would let requests larger than one window's quota through unpaid). Like Kafka, a
//!   client starting from nothing may send `num - 1` windows' worth before the first throttle.
//!   Produce and Fetch return it in `throttle_time_ms`; the connection then
//!   reads nothing more from the client for that long (`track`, "muting" in Kafka), so clients
//!   that ignore the field are slowed down as well.
//! * **request_percentage** approximation: Kafka measures the time request-handler and network
//!   threads spend on a client's requests. Fjord has no such threads, so it counts the wall time
//!   spent inside `poll` of the request's future (time a runtime worker is busy with it; waiting
//!   in a long poll or for a rebalance does not count), as a percentage of one thread. Requests
//!   over the quota mute the connection; the time is not added to `throttle_time_ms`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{GaugeVec, Opts, Registry};

use crate::metadata::quota::{EntityName, QuotaEntity};
use crate::metadata::{MetadataCache, MetadataImage};
use crate::protocol::context::RequestContext;

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

/// Who shares one budget: (user tag, client-id tag); an empty tag means "any".
type BucketKey = (String, String);

/// The quota in force for a client and the bucket it is accounted in.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub limit: f64,
    pub bucket: BucketKey,
}

/// Kafka's precedence: the first entity (of eight) that sets `key` wins.
pub fn resolve(img: &MetadataImage, user: &str, client_id: &str, key: &str) -> Option<Resolved> {
    if img.quotas.is_empty() {
        return None;
    }
    let named = |n: &str| Some(EntityName::Named(n.to_string()));
    let default = || Some(EntityName::Default);
    let order = [
        (named(user), named(client_id)),
        (named(user), default()),
        (named(user), None),
        (default(), named(client_id)),
        (default(), default()),
        (default(), None),
        (None, named(client_id)),
        (None, default()),
    ];
    for (u, c) in order {
        let bucket = (
            if u.is_some() { user } else { "" }.to_string(),
            if c.is_some() { client_id } else { "" }.to_string(),
        );
        let entity = QuotaEntity {
            user: u,
            client_id: c,
            ip: None,
        };
        if let Some(limit) = img.client_quota(&entity).and_then(|v| v.get(key)) {
            return Some(Resolved {
                limit: *limit,
                bucket,
            });
        }
    }
    None
}

/// The user part of a principal (`User:alice` -> `alice`), as quota entities name users.
pub fn user_name(principal: &str) -> &str {
    principal.split_once(':').map_or(principal, |(_, n)| n)
}

/// A sampled rate (Kafka's `Rate` over `SampledStat`), times in ms.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    samples: VecDeque<(u64, f64)>,
}

impl Rate {
    fn purge(&mut self, now: u64, window: u64, num: u32) {
        let max_age = window * num as u64;
        self.samples
            .retain(|(start, _)| now.saturating_sub(*start) < max_age);
    }

    pub fn record(&mut self, value: f64, now: u64, window: u64, num: u32) {
        self.purge(now, window, num);
        match self.samples.back_mut() {
            Some((start, v)) if now.saturating_sub(*start) < window => *v += value,
            _ => {
                if self.samples.len() >= num as usize {
                    self.samples.pop_front();
                }
                self.samples.push_back((now, value));
            }
        }
    }

    /// Kafka's `Rate.windowSize`: elapsed time since the oldest live sample, at least
    /// `num - 1` full windows.
    pub fn window_ms(&mut self, now: u64, window: u64, num: u32) -> u64 {
        self.purge(now, window, num);
        let elapsed = self
            .samples
            .front()
            .map_or(0, |(start, _)| now.saturating_sub(*start));
        elapsed.max(window * (num as u64 - 1))
    }

    /// Units per second.
    pub fn measure(&mut self, now: u64, window: u64, num: u32) -> f64 {
        let w = self.window_ms(now, window, num);
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        total * 1000.0 / w as f64
    }

    /// Records `value` and returns the throttle time in ms needed to bring the rate back to
    /// `limit`, capped at `max_ms`.
    pub fn record_and_throttle(
        &mut self,
        value: f64,
        limit: f64,
        now: u64,
        window: u64,
        num: u32,
        max_ms: u64,
    ) -> u64 {
        self.record(value, now, window, num);
        let rate = self.measure(now, window, num);
        if rate <= limit || limit <= 0.0 {
            return 0;
        }
        let w = self.window_ms(now, window, num) as f64;
        (((rate - limit) / limit) * w).min(max_ms as f64).max(0.0) as u64
    }

    /// Takes back a recorded value (Kafka unrecords a fetch it answers empty).
    pub fn unrecord(&mut self, value: f64) {
        if let Some((_, v)) = self.samples.back_mut() {
            *v -= value;
        }
    }
}

/// One quota type's buckets and metrics.
struct Sensor {
    key: &'static str,
    rates: Mutex<HashMap<BucketKey, Rate>>,
    throttle_time: GaugeVec,
    rate_gauge: GaugeVec,
}

impl Sensor {
    fn new(r: &Registry, key: &'static str, kind: &str, rate_name: &str) -> Sensor {
        let labels = &["user", "client_id"];
        let throttle_time = GaugeVec::new(
            Opts::new(
                format!("kafka_server_{kind}_throttle_time"),
                format!("Last {kind} quota throttle time in ms, by quota bucket"),
            ),
            labels,
        )
        .expect("valid metric");
        let rate_gauge = GaugeVec::new(
            Opts::new(
                format!("kafka_server_{kind}_{rate_name}"),
                format!("Measured {key} of the quota bucket"),
            ),
            labels,
        )
        .expect("valid metric");
        let _ = r.register(Box::new(throttle_time.clone()));
        let _ = r.register(Box::new(rate_gauge.clone()));
        Sensor {
            key,
            rates: Mutex::new(HashMap::new()),
            throttle_time,
            rate_gauge,
        }
    }
}

/// The broker's quota state: one sensor per quota type.
pub struct QuotaManager {
    window_ms: u64,
    num: u32,
    epoch: Instant,
    produce: Sensor,
    fetch: Sensor,
    request: Sensor,
}

/// Which quota a recording is for.
#[derive(Debug, Clone, Copy)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
}

impl QuotaManager {
    pub fn new(registry: &Registry, window_num: u32, window_size_seconds: u32) -> QuotaManager {
        QuotaManager {
            window_ms: window_size_seconds as u64 * 1000,
            num: window_num.max(2),
            epoch: Instant::now(),
            produce: Sensor::new(registry, PRODUCER_BYTE_RATE, "produce", "byte_rate"),
            fetch: Sensor::new(registry, CONSUMER_BYTE_RATE, "fetch", "byte_rate"),
            request: Sensor::new(registry, REQUEST_PERCENTAGE, "request", "request_time"),
        }
    }

    fn sensor(&self, t: QuotaType) -> &Sensor {
        match t {
            QuotaType::Produce => &self.produce,
            QuotaType::Fetch => &self.fetch,
            QuotaType::Request => &self.request,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records `value` for the client's bucket and returns the throttle time in ms (0 when no
    /// quota applies or the client is within it).
    pub fn record(
        &self,
        img: &MetadataImage,
        t: QuotaType,
        principal: &str,
        client_id: &str,
        value: f64,
    ) -> u64 {
        let sensor = self.sensor(t);
        let Some(q) = resolve(img, user_name(principal), client_id, sensor.key) else {
            return 0;
        };
        let now = self.now_ms();
        let (throttle, rate) = {
            let mut rates = sensor.rates.lock();
            let r = rates.entry(q.bucket.clone()).or_default();
            let th = r.record_and_throttle(
                value,
                q.limit,
                now,
                self.window_ms,
                self.num,
                self.window_ms * self.num as u64,
            );
            (th, r.measure(now, self.window_ms, self.num))
        };
        let labels = [q.bucket.0.as_str(), q.bucket.1.as_str()];
        sensor
            .throttle_time
            .with_label_values(&labels)
            .set(throttle as f64);
        sensor.rate_gauge.with_label_values(&labels).set(rate);
        throttle
    }

    /// Takes back a value recorded for the client (an empty throttled fetch response).
    pub fn unrecord(
        &self,
        img: &MetadataImage,
        t: QuotaType,
        principal: &str,
        client_id: &str,
        value: f64,
    ) {
        let sensor = self.sensor(t);
        if let Some(q) = resolve(img, user_name(principal), client_id, sensor.key) {
            if let Some(r) = sensor.rates.lock().get_mut(&q.bucket) {
                r.unrecord(value);
            }
        }
    }
}

#[derive(Default)]
struct RequestState {
    identity: Option<(String, String)>,
    throttle_ms: u64,
}

tokio::task_local! {
    static REQUEST: RefCell<RequestState>;
}

/// Handlers name who sent the request (for `request_percentage`); outside `track` a no-op.
pub fn note_identity(ctx: &RequestContext) {
    let _ = REQUEST.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.identity.is_none() {
            r.identity = Some((ctx.principal.clone(), ctx.client_id.clone()));
        }
    });
}

/// Handlers report a throttle time; the connection mutes itself for the longest one.
pub fn throttle(ms: u64) {
    let _ = REQUEST.try_with(|r| {
        let mut r = r.borrow_mut();
        r.throttle_ms = r.throttle_ms.max(ms);
    });
}

/// Runs one request's handling, measuring the time spent in `poll` (`request_percentage`), and
/// returns its output with how long the connection must stay muted afterwards.
pub async fn track<F: Future>(
    quotas: &QuotaManager,
    image: &MetadataCache,
    fut: F,
) -> (F::Output, Duration) {
    REQUEST
        .scope(RefCell::new(RequestState::default()), async move {
            let mut fut = std::pin::pin!(fut);
            let mut busy = Duration::ZERO;
            let out = std::future::poll_fn(|cx| {
                let started = Instant::now();
                let r = fut.as_mut().poll(cx);
                busy += started.elapsed();
                r
            })
            .await;
            let state = REQUEST.with(|r| std::mem::take(&mut *r.borrow_mut()));
            let mut mute = state.throttle_ms;
            if let Some((principal, client_id)) = state.identity {
                let img = image.snapshot();
                let percent_seconds = busy.as_secs_f64() * 100.0;
                mute = mute.max(quotas.record(
                    &img,
                    QuotaType::Request,
                    &principal,
                    &client_id,
                    percent_seconds,
                ));
            }
            (out, Duration::from_millis(mute))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataRecord;
    use std::collections::BTreeMap;

    /// An entity part in tests: None = absent, Some(None) = default, Some(Some(n)) = named.
    type Part<'a> = Option<Option<&'a str>>;

    fn set(img: &mut MetadataImage, user: Part, client: Part, v: f64) {
        let part =
            |p: Part| p.map(|n| n.map_or(EntityName::Default, |n| EntityName::Named(n.into())));
        let mut changes = BTreeMap::new();
        changes.insert(PRODUCER_BYTE_RATE.to_string(), Some(v));
        img.apply(&MetadataRecord::ClientQuota {
            entity: QuotaEntity {
                user: part(user),
                client_id: part(client),
                ip: None,
            },
            changes,
        });
    }

    #[test]
    fn precedence_follows_kafka() {
        let mut img = MetadataImage::default();
        assert_eq!(resolve(&img, "alice", "app", PRODUCER_BYTE_RATE), None);
        // Added from lowest to highest precedence; each must take over.
        let steps: [(Part, Part, (&str, &str)); 8] = [
            (None, Some(None), ("", "app")),
            (None, Some(Some("app")), ("", "app")),
            (Some(None), None, ("alice", "")),
            (Some(None), Some(None), ("alice", "app")),
            (Some(None), Some(Some("app")), ("alice", "app")),
            (Some(Some("alice")), None, ("alice", "")),
            (Some(Some("alice")), Some(None), ("alice", "app")),
            (Some(Some("alice")), Some(Some("app")), ("alice", "app")),
        ];
        for (i, (u, c, bucket)) in steps.into_iter().enumerate() {
            set(&mut img, u, c, (i + 1) as f64);
            let r = resolve(&img, "alice", "app", PRODUCER_BYTE_RATE).unwrap();
            assert_eq!(r.limit, (i + 1) as f64, "step {i}");
            assert_eq!(r.bucket, (bucket.0.to_string(), bucket.1.to_string()));
        }
        // Another user with another client falls through to the defaults.
        let r = resolve(&img, "bob", "other", PRODUCER_BYTE_RATE).unwrap();
        assert_eq!(r.limit, 4.0, "/users/<default>/clients/<default>");
        // Other quota keys resolve independently.
        assert_eq!(resolve(&img, "alice", "app", CONSUMER_BYTE_RATE), None);
        assert_eq!(user_name("User:ANONYMOUS"), "ANONYMOUS");
    }

    #[test]
    fn rate_uses_at_least_num_minus_one_windows() {
        let mut r = Rate::default();
        r.record(1000.0, 0, 1000, 11);
        assert_eq!(r.window_ms(0, 1000, 11), 10_000);
        assert!((r.measure(0, 1000, 11) - 100.0).abs() < 1e-9);
        r.record(1000.0, 15_000, 1000, 11);
        // The first sample expired after 11 windows.
        assert_eq!(r.samples.len(), 1);
        r.record(1000.0, 15_500, 1000, 11);
        assert_eq!(r.samples.len(), 1, "same window");
        r.record(1000.0, 16_000, 1000, 11);
        assert_eq!(r.samples.len(), 2);
    }

    #[test]
    fn throttle_brings_the_rate_back_to_the_quota() {
        let mut r = Rate::default();
        // 10 windows' worth at 100/s is exactly the quota: no throttle.
        assert_eq!(r.record_and_throttle(1000.0, 100.0, 0, 1000, 11, 1000), 0);
        // 50 more units need 0.5 s more at 100/s.
        assert_eq!(r.record_and_throttle(50.0, 100.0, 10, 1000, 11, 1000), 500);
        // Capped at one window.
        assert_eq!(
            r.record_and_throttle(5000.0, 100.0, 20, 1000, 11, 1000),
            1000
        );
        r.unrecord(5000.0);
        assert_eq!(r.record_and_throttle(0.0, 100.0, 20, 1000, 11, 1000), 500);
    }

    #[test]
    fn simulated_producer_converges_to_the_quota() {
        // A client that sends 64 KiB whenever it is allowed and honours throttle times.
        let (limit, window, num) = (200_000.0, 1000, 11);
        let mut r = Rate::default();
        let (mut now, mut sent) = (0u64, 0f64);
        while now < 30_000 {
            let th = r.record_and_throttle(65536.0, limit, now, window, num, window);
            sent += 65536.0;
            now += th.max(1);
        }
        let achieved = sent / 30.0;
        assert!(
            (achieved / limit - 1.0).abs() < 0.2,
            "achieved {achieved} B/s for a quota of {limit}"
        );
    }
}
