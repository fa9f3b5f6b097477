//! The field journal on real redb files: restart survival, drain order, the batch in flight,
//! bounded growth by downsampling telemetry while meter reads are never dropped, the relay
//! event log's bound, and the arithmetic behind "seven days at default rates".

use ghatta::field::shipper::READS_PER_PROPOSAL_MAX;
use ghatta::journal::{
    BYTES_MAX_DEFAULT, Cause, DOWNSAMPLE_FACTOR, EVENTS_MAX, FeederEntry, Inflight, Journal,
    JournalLimits, LEVEL_MAX, RECORDS_MAX_DEFAULT, ReadEntry, ReasonCode, RelayEvent,
    TelemetryEntry,
};
use ghatta_hal::RelayLine;

fn telemetry(at_ms: u64, f: u32) -> TelemetryEntry {
    TelemetryEntry {
        at_ms,
        span_ms: 1_000,
        level: 0,
        samples: 10,
        frequency_mhz_min: f - 20,
        frequency_mhz_max: f + 20,
        frequency_mhz_last: f,
        voltage_dv_min: 2_290,
        voltage_dv_max: 2_310,
        voltage_dv_last: 2_300,
        generation_w: 28_000,
        ballast_w: 3_000,
        ballast_capacity_w: 30_000,
        feeders: (1..=4)
            .map(|feeder| FeederEntry {
                feeder,
                load_w: 6_000,
                closed: true,
            })
            .collect(),
    }
}

fn read(customer: u32, total_wh: u64, read_at_ms: u64) -> ReadEntry {
    ReadEntry {
        customer,
        total_wh,
        read_at_ms,
    }
}

const T0: u64 = 1_735_711_200_000;

fn limits(bytes_max: u64, records_max: u64) -> JournalLimits {
    JournalLimits {
        bytes_max,
        records_max,
        fsync: false,
        ..JournalLimits::default()
    }
}

#[test]
fn everything_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let j = Journal::open_dir(dir.path(), JournalLimits::default()).expect("open");
        j.append(
            Some(&telemetry(T0, 50_000)),
            &[read(1, 10, T0), read(2, 20, T0)],
        )
        .expect("append");
        j.append(
            Some(&telemetry(T0 + 1_000, 49_900)),
            &[read(1, 11, T0 + 1_000)],
        )
        .expect("append");
        let b = Inflight {
            seq: 77,
            first_read_id: 0,
            reads: 2,
        };
        j.begin_batch(&b).expect("begin");
        j.record_events(&[RelayEvent {
            at_ms: T0,
            line: RelayLine::Feeder(2),
            closed: false,
            reason: ReasonCode::Protection,
            cause: Cause::Ufls {
                stage: 1,
                frequency_mhz: 48_900,
            },
            local: true,
            error: None,
        }])
        .expect("event");
        j.save_field_state(b"state").expect("state");
        // An fsynced append after the non-fsynced writes makes them durable too.
        j.append(None, &[read(3, 5, T0 + 2_000)]).expect("append");
    }
    let j = Journal::open_dir(dir.path(), JournalLimits::default()).expect("reopen");
    let reads: Vec<_> = j.oldest_reads(10).expect("reads");
    assert_eq!(
        reads
            .iter()
            .map(|(_, r)| (r.customer, r.total_wh))
            .collect::<Vec<_>>(),
        vec![(1, 10), (2, 20), (1, 11), (3, 5)]
    );
    let b = j.inflight().expect("inflight").expect("a batch in flight");
    assert_eq!(b.seq, 77);
    assert_eq!(
        j.batch_reads(&b)
            .expect("batch")
            .iter()
            .map(|r| r.total_wh)
            .collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(j.telemetry_from(0, 10).expect("telemetry").len(), 2);
    assert_eq!(j.recent_events(10).expect("events").len(), 1);
    assert_eq!(
        j.load_field_state().expect("state").as_deref(),
        Some(&b"state"[..])
    );
    let s = j.stats().expect("stats");
    assert_eq!((s.reads, s.telemetry, s.events), (4, 2, 1));
}

/// Telemetry-only periods are fsynced once in `TELEMETRY_APPENDS_PER_SYNC`; reads every time.
/// On a simulated disk, a power cut loses unsynced telemetry and never a read.
#[test]
fn telemetry_only_appends_share_an_fsync_and_reads_never_wait() {
    use ghatta::journal::TELEMETRY_APPENDS_PER_SYNC;
    use ghatta_sim::disk::SimDisk;
    let disk = SimDisk::new();
    let open = || Journal::open_backend(disk.clone(), "journal", JournalLimits::default());
    let j = open().expect("open");
    let syncs = |d: &SimDisk| d.counters().syncs;
    let n = u64::from(TELEMETRY_APPENDS_PER_SYNC);
    for round in 0..3 {
        let before = syncs(&disk);
        j.append(Some(&telemetry(T0, 50_000)), &[read(1, 10 + round, T0)])
            .expect("append with a read");
        assert_eq!(syncs(&disk), before + 1, "a read is fsynced at once");
    }
    let before = syncs(&disk);
    for i in 1..n {
        j.append(Some(&telemetry(T0 + i * 1_000, 50_000)), &[])
            .expect("telemetry");
    }
    // redb may fsync on its own when it grows the file; an fsync per append would be n - 1.
    let synced = syncs(&disk) - before;
    assert!(
        synced <= 1,
        "{} telemetry-only appends made {synced} fsyncs",
        n - 1
    );
    disk.power_cut();
    drop(j);
    let j = open().expect("reopen after a power cut");
    assert_eq!(
        j.oldest_reads(10).expect("reads").len(),
        3,
        "every read survived"
    );
    let kept = j.telemetry_from(0, 1_000).expect("telemetry").len() as u64;
    assert!(
        (3..3 + n - 1).contains(&kept),
        "some unsynced telemetry is lost: kept {kept}"
    );
    // The n-th telemetry-only append since the last fsync is fsynced, with those before it.
    for i in 1..=n {
        j.append(Some(&telemetry(T0 + (100 + i) * 1_000, 50_000)), &[])
            .expect("telemetry");
    }
    disk.power_cut();
    drop(j);
    let j = open().expect("reopen after a second power cut");
    assert_eq!(
        j.telemetry_from(0, 1_000).expect("telemetry").len() as u64,
        kept + n
    );
}

#[test]
fn batches_drain_oldest_first_and_commit_exactly_their_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open_dir(dir.path(), limits(BYTES_MAX_DEFAULT, RECORDS_MAX_DEFAULT))
        .expect("open");
    for s in 0..1_200u64 {
        j.append(None, &[read((s % 3) as u32 + 1, s, T0 + s)])
            .expect("append");
    }
    let mut committed = Vec::new();
    let mut seq = 100;
    loop {
        let oldest = j.oldest_reads(READS_PER_PROPOSAL_MAX).expect("oldest");
        if oldest.is_empty() {
            break;
        }
        let (first, last) = (oldest[0].0, oldest[oldest.len() - 1].0);
        let b = Inflight {
            seq,
            first_read_id: first,
            reads: last - first + 1,
        };
        j.begin_batch(&b).expect("begin");
        // Committing another sequence number removes nothing.
        assert!(j.commit_batch(seq + 1000).expect("wrong seq").is_empty());
        let reads = j.commit_batch(seq).expect("commit");
        assert_eq!(reads.len(), oldest.len());
        // A second commit of the same batch (a duplicate acknowledgement) is a no-op.
        assert!(j.commit_batch(seq).expect("again").is_empty());
        committed.extend(reads.into_iter().map(|r| r.total_wh));
        seq += 1;
    }
    assert_eq!(
        committed,
        (0..1_200).collect::<Vec<_>>(),
        "oldest first, each once"
    );
    assert_eq!(seq - 100, 3, "511 reads a proposal");
    let s = j.stats().expect("stats");
    assert_eq!((s.reads, s.reads_bytes, s.reads_committed), (0, 0, 1_200));
}

#[test]
fn telemetry_is_downsampled_past_the_limit_and_reads_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Limit: room for about 2,000 telemetry summaries.
    let per = ghatta_proto::codec::encode(&telemetry(T0, 50_000))
        .expect("enc")
        .len() as u64
        + 8;
    let j = Journal::open_dir(dir.path(), limits(per * 2_000, 1_000_000)).expect("open");
    let n = 10_000u64;
    let mut reads = 0;
    for s in 0..n {
        let f = 49_000 + (s % 2_000) as u32;
        let r: Vec<ReadEntry> = if s % 10 == 0 {
            reads += 1;
            vec![read(1, s, T0 + s * 1_000)]
        } else {
            Vec::new()
        };
        j.append(Some(&telemetry(T0 + s * 1_000, f)), &r)
            .expect("append");
        if s % 100 == 0 {
            while j.maintain(T0 + s * 1_000).expect("maintain") {}
        }
    }
    while j.maintain(T0 + n * 1_000).expect("maintain") {}
    let s = j.stats().expect("stats");
    assert_eq!(s.reads, reads, "reads are never dropped");
    assert!(
        s.telemetry_bytes + s.reads_bytes <= per * 2_000,
        "within the limit"
    );
    assert!(!s.over_limit);
    assert!(s.telemetry_downsampled > 0);
    let t = j.telemetry_from(0, 100_000).expect("telemetry");
    // Time order kept, the oldest data is the coarsest, and min/max survive the merges.
    assert!(t.windows(2).all(|w| w[0].1.at_ms < w[1].1.at_ms));
    assert!(t.windows(2).all(|w| w[0].1.level >= w[1].1.level));
    assert!(t.iter().all(|(_, e)| e.level <= LEVEL_MAX));
    assert_eq!(
        t.last().map(|(_, e)| e.level),
        Some(0),
        "recent data stays raw"
    );
    let coarse = t
        .iter()
        .find(|(_, e)| e.level > 0)
        .expect("a merged summary");
    assert!(coarse.1.frequency_mhz_min < coarse.1.frequency_mhz_max);
    assert!(coarse.1.span_ms >= (DOWNSAMPLE_FACTOR as u64 - 1) * 1_000);
    // Merging keeps the sample count: nothing is summarised twice.
    let total_samples: u64 = t.iter().map(|(_, e)| u64::from(e.samples)).sum();
    assert_eq!(total_samples, n * 10);
}

#[test]
fn reads_alone_over_the_limit_are_kept_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open_dir(dir.path(), limits(100_000, 1_000_000)).expect("open");
    for s in 0..10_000u64 {
        let t = (s % 10 == 0).then(|| telemetry(T0 + s * 100, 50_000));
        j.append(t.as_ref(), &[read((s % 50) as u32, s, T0 + s * 100)])
            .expect("append");
    }
    while j.maintain(T0 + 1_000_000).expect("maintain") {}
    let s = j.stats().expect("stats");
    assert_eq!(s.reads, 10_000, "reads are never dropped");
    assert!(s.reads_bytes > 100_000);
    assert!(
        s.over_limit,
        "the journal says it is over: the field loop journals less"
    );
    assert!(s.telemetry < 100, "telemetry made room as far as it could");
}

#[test]
fn downsampling_stops_once_under_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let per = ghatta_proto::codec::encode(&telemetry(T0, 50_000))
        .expect("enc")
        .len() as u64
        + 8;
    let j = Journal::open_dir(dir.path(), limits(per * 1_000, 1_000_000)).expect("open");
    for s in 0..1_500u64 {
        j.append(Some(&telemetry(T0 + s * 1_000, 50_000)), &[])
            .expect("append");
    }
    while j.maintain(T0 + 1_500_000).expect("maintain") {}
    let s = j.stats().expect("stats");
    assert!(s.telemetry_bytes <= per * 900, "under 90 % of the limit");
    assert!(!s.over_limit);
    // Not everything was merged: the newest summaries are still raw.
    let t = j.telemetry_from(0, 10_000).expect("telemetry");
    assert_eq!(t.last().map(|(_, e)| e.level), Some(0));
    assert!(t.len() > 500);
}

#[test]
fn telemetry_older_than_the_retention_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open_dir(
        dir.path(),
        JournalLimits {
            telemetry_retention_ms: 60_000,
            fsync: false,
            ..JournalLimits::default()
        },
    )
    .expect("open");
    for s in 0..120u64 {
        j.append(Some(&telemetry(T0 + s * 1_000, 50_000)), &[read(1, s, T0)])
            .expect("append");
    }
    while j.maintain(T0 + 120_000).expect("maintain") {}
    let s = j.stats().expect("stats");
    assert_eq!(s.telemetry, 60);
    assert_eq!(s.reads, 120);
}

#[test]
fn the_event_log_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open_dir(dir.path(), limits(BYTES_MAX_DEFAULT, RECORDS_MAX_DEFAULT))
        .expect("open");
    let ev = |i: u64| RelayEvent {
        at_ms: T0 + i,
        line: RelayLine::Customer(i as u32),
        closed: i.is_multiple_of(2),
        reason: ReasonCode::Billing,
        cause: Cause::Committed { index: i },
        local: false,
        error: None,
    };
    let all: Vec<RelayEvent> = (0..EVENTS_MAX + 50).map(ev).collect();
    for chunk in all.chunks(1_000) {
        j.record_events(chunk).expect("record");
    }
    let s = j.stats().expect("stats");
    assert_eq!(s.events, EVENTS_MAX);
    let recent = j.recent_events(3).expect("recent");
    assert_eq!(
        recent.iter().map(|e| e.at_ms - T0).collect::<Vec<_>>(),
        vec![EVENTS_MAX + 47, EVENTS_MAX + 48, EVENTS_MAX + 49]
    );
    let oldest = j.recent_events(EVENTS_MAX as usize).expect("all");
    assert_eq!(oldest.first().map(|e| e.at_ms - T0), Some(50));
}

/// The sizing behind `BYTES_MAX_DEFAULT` and `RECORDS_MAX_DEFAULT`, with real encodings: a
/// week of island at default rates (one telemetry summary a second with four feeders; one
/// read a minute for each of 350 customers, DOMAIN's largest plant) fits without any
/// downsampling.
#[test]
fn journal_fits_a_week_at_default_rates() {
    let week_s = 7 * 86_400u64;
    let t = ghatta_proto::codec::encode(&telemetry(T0 + week_s * 1_000, 49_876))
        .expect("enc")
        .len() as u64
        + 8;
    let r = ghatta_proto::codec::encode(&read(350, 9_999_999, T0 + week_s * 1_000))
        .expect("enc")
        .len() as u64
        + 8;
    let customers = 350u64;
    let reads = week_s / 60 * customers;
    let summaries = week_s;
    let bytes = reads * r + summaries * t;
    assert!(
        bytes <= BYTES_MAX_DEFAULT * 9 / 10,
        "a week is {bytes} B, limit {BYTES_MAX_DEFAULT}"
    );
    assert!(reads + summaries <= RECORDS_MAX_DEFAULT * 9 / 10);
    // And the journal counts the same sizes the arithmetic uses.
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open_dir(dir.path(), limits(BYTES_MAX_DEFAULT, RECORDS_MAX_DEFAULT))
        .expect("open");
    j.append(
        Some(&telemetry(T0 + week_s * 1_000, 49_876)),
        &[read(350, 9_999_999, T0 + week_s * 1_000)],
    )
    .expect("append");
    let s = j.stats().expect("stats");
    assert_eq!((s.telemetry_bytes, s.reads_bytes), (t, r));
}
