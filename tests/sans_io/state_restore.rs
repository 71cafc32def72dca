//! Persistence, sans-IO: a registered UE's binding is written through as a record, sealed, and
//! restored into a fresh registrar and SA table (a restart) with the SPIs, ports, keys and
//! registration the UE knows; outbound sequence numbers resume past anything sent and the
//! inbound windows refuse what was accepted (RFC 4303 §3.3.3, §3.4.3). Hostile records (an SPI
//! taken or out of range, two current sets, expired sets) are left out without harm.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcscf::control::registrar::{PersistOptions, SEQ_STEP, StoreWrite};
use pcscf::control::store::{BindingRecord, Sealer, SetRole};
use pcscf::esp::EspError;

use crate::registration_flow::{Challenge, World, challenge, register_answered, world};
use crate::support::ims::*;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Registers the test UE (a 600 s registration, two IMPUs).
fn register(w: &mut World) -> Challenge {
    let (c, out) = register_answered(
        w,
        "Service-Route: <sip:orig@scscf.test:6060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>, <tel:+15551230001>\r\nContact: <sip:001010000000001@10.46.0.6:5060>;expires=600\r\n",
    );
    assert_eq!(out.len(), 1);
    assert_eq!(w.reg.registrations(), 1);
    c
}

fn puts(writes: Vec<StoreWrite>) -> Vec<BindingRecord> {
    writes
        .into_iter()
        .map(|w| match w {
            StoreWrite::Put(r) => r,
            StoreWrite::Delete(i) => panic!("unexpected delete of {i:?}"),
        })
        .collect()
}

/// The sequence number of one packet sent over the outbound SA toward the UE's port-s.
fn send_seq(w: &World, port_pc: u16) -> Result<u32, EspError> {
    let g = w.sas.pin();
    let e = g
        .outbound("10.46.0.6".parse().unwrap(), 7005, port_pc)
        .expect("SA2");
    let mut frame = vec![0u8; 1024];
    let at = 256 + 28;
    frame[at..at + 5].copy_from_slice(b"hello");
    let r = pcscf::wire::emit_datagram(
        &mut frame,
        at..at + 5,
        addr(&format!("10.46.0.1:{port_pc}")),
        addr("10.46.0.6:7005"),
    )
    .ok()
    .unwrap();
    let mut f = pcscf::esp::Frame::new(&mut frame, r.start, r.end);
    e.sa().outbound(&mut f)
}

fn restarted(w: &World) -> World {
    let mut fresh = world();
    fresh.now = w.now + Duration::from_secs(5);
    fresh.reg.enable_persistence(PersistOptions::default());
    fresh
}

#[test]
fn a_registered_ue_survives_a_restart_with_its_sas_and_counters() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions::default());
    let c = register(&mut w);
    let wall = wall_ms();
    let recs = puts(w.reg.drain_store(w.now, wall, usize::MAX));
    assert_eq!(recs.len(), 1, "one binding written through");
    let rec = &recs[0];
    assert_eq!(rec.impi, IMPI.as_bytes());
    assert_eq!(rec.sets.len(), 1);
    let s = &rec.sets[0];
    assert_eq!(s.role, SetRole::Current);
    assert_eq!(
        (s.spi_pc, s.spi_ps, s.spi_uc, s.spi_us),
        (c.spi_pc, c.spi_ps, 1236, 1237)
    );
    assert_eq!(s.out_ceiling, [SEQ_STEP; 2]);
    let left = s.expires_ms - wall;
    assert!(
        (629_000..=630_000).contains(&left),
        "600 s + 30 s grace: {left}"
    );
    w.reg.store_written();
    assert!(
        w.reg.drain_store(w.now, wall, usize::MAX).is_empty(),
        "nothing changed since"
    );

    // traffic: we send 3 packets to the UE; the UE's packets 1..=9 reached us over SA1
    for n in 1..=3 {
        assert_eq!(send_seq(&w, c.port_pc), Ok(n));
    }
    {
        let g = w.sas.pin();
        let sa1 = g.inbound(c.spi_ps).unwrap().sa();
        for n in 1..=9 {
            sa1.replay_window().check_and_set(n).unwrap();
        }
    }
    // an SA driven to within half a step of its ceiling gets it raised, but only once the
    // record with the new ceiling is written
    {
        let g = w.sas.pin();
        let sa3 = g
            .outbound("10.46.0.6".parse().unwrap(), 7004, c.port_ps)
            .unwrap()
            .sa();
        sa3.force_last_seq_sent(SEQ_STEP / 2 + 10);
    }
    assert_eq!(w.reg.sweep_counters(None), 1);
    let recs = puts(w.reg.drain_store(w.now, wall, usize::MAX));
    let s = &recs[0].sets[0];
    assert_eq!(s.out_ceiling, [SEQ_STEP, SEQ_STEP / 2 + 10 + SEQ_STEP]);
    assert_eq!(s.in_top, [9, 0]);
    let sa3_ceiling = || {
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7004, c.port_ps)
            .unwrap()
            .sa()
            .seq_ceiling()
    };
    assert_eq!(sa3_ceiling(), SEQ_STEP, "not raised before the write");
    w.reg.store_written();
    assert_eq!(sa3_ceiling(), SEQ_STEP / 2 + 10 + SEQ_STEP);

    // the record goes through the seal and back, then into a fresh process
    let sealer = Sealer::new(&[0x42; 32]);
    let (key, sealed) = sealer.seal_binding(&recs[0]).unwrap();
    let rec = sealer.open_binding(&key, &sealed).unwrap();
    let mut r = restarted(&w);
    let done = r.reg.restore(&rec, r.now, wall + 5_000);
    assert_eq!((done.sets, done.expired, done.failed), (1, 0, 0));
    r.reg.check_sa_invariants().unwrap();
    assert_eq!(r.reg.registrations(), 1);
    let view = r.reg.registration_of(c.spi_ps).expect("known by our SPI");
    assert_eq!(view.impi, IMPI.as_bytes());
    assert_eq!(view.impus[1], b"tel:+15551230001");
    {
        let g = r.sas.pin();
        for spi in [c.spi_ps, c.spi_pc] {
            let e = g.inbound(spi).expect("same SPIs");
            assert_eq!(
                e.registration().unwrap().pai(),
                b"<sip:001010000000001@ims.test>"
            );
        }
        // RFC 4303 §3.4.3: what the UE sent before is refused, its next accepted
        let sa1 = g.inbound(c.spi_ps).unwrap().sa();
        assert!(sa1.replay_window().precheck(9).is_err());
        assert_eq!(sa1.replay_window().precheck(10), Ok(()));
    }
    // RFC 4303 §3.3.3: nothing goes out until the raised ceiling is written, then numbers
    // resume past the old ceiling (past the 3 sent)
    assert_eq!(send_seq(&r, c.port_pc), Err(EspError::SeqCeiling));
    let recs = puts(r.reg.drain_store(r.now, wall + 5_000, usize::MAX));
    assert_eq!(recs[0].sets[0].out_ceiling[0], 2 * SEQ_STEP);
    r.reg.store_written();
    let first = send_seq(&r, c.port_pc).unwrap();
    assert!(
        first > SEQ_STEP,
        "resumed after the persisted ceiling: {first}"
    );

    // the restored set still ends at its time: 630 s after the 200, less the 5 s of restart
    r.reg.handle_timeout(r.now + Duration::from_secs(624));
    assert_eq!(r.reg.registrations(), 1);
    r.reg.handle_timeout(r.now + Duration::from_secs(626));
    assert_eq!(r.reg.registrations(), 0);
    r.reg.check_sa_invariants().unwrap();
    let gone = r.reg.drain_store(r.now, wall, usize::MAX);
    assert!(
        matches!(&gone[..], [StoreWrite::Delete(i)] if **i == *IMPI.as_bytes()),
        "{gone:?}"
    );
}

/// Hostile or stale records: an expired set is left out (and its record deleted); an SPI
/// outside the table, or one another set holds, costs only that set; two current sets in one
/// record keep the first. The table stays exactly what the bindings hold.
#[test]
fn stale_or_conflicting_records_cost_only_themselves() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions::default());
    let c = register(&mut w);
    let wall = wall_ms();
    let rec = puts(w.reg.drain_store(w.now, wall, usize::MAX)).remove(0);

    // expired
    let mut r = restarted(&w);
    let done = r.reg.restore(&rec, r.now, wall + 700_000);
    assert_eq!((done.sets, done.expired), (0, 1));
    assert_eq!(r.reg.registrations(), 0);
    assert!(matches!(
        &r.reg.drain_store(r.now, wall, usize::MAX)[..],
        [StoreWrite::Delete(_)]
    ));
    r.reg.check_sa_invariants().unwrap();

    // an SPI outside this configuration's range, beside a good set
    let mut bad = rec.clone();
    let mut s = bad.sets[0].clone();
    s.role = SetRole::Old;
    s.spi_pc = 100;
    s.ue = "10.46.0.99".parse().unwrap();
    bad.sets.push(s);
    let mut r = restarted(&w);
    let done = r.reg.restore(&bad, r.now, wall);
    assert_eq!((done.sets, done.failed), (1, 1));
    r.reg.check_sa_invariants().unwrap();

    // the same record twice (its SPIs are taken the second time): the first stays whole
    let mut r = restarted(&w);
    assert_eq!(r.reg.restore(&rec, r.now, wall).sets, 1);
    let again = r.reg.restore(&rec, r.now, wall);
    assert_eq!((again.sets, again.failed), (0, 1));
    r.reg.check_sa_invariants().unwrap();
    assert!(r.sas.pin().inbound(c.spi_ps).is_some());

    // two current sets (other SPIs, UE address, ports): the first kept
    let mut two = rec.clone();
    let mut s = two.sets[0].clone();
    s.spi_pc += 1;
    s.spi_ps += 1;
    s.ue = "10.46.0.77".parse().unwrap();
    two.sets.push(s);
    let mut r = restarted(&w);
    let done = r.reg.restore(&two, r.now, wall);
    assert_eq!((done.sets, done.failed), (1, 1));
    r.reg.check_sa_invariants().unwrap();
    assert!(r.sas.pin().inbound(c.spi_ps).is_some());
}

/// Without persistence nothing is kept for a record: no keys, no ceilings on the SAs.
#[test]
fn without_persistence_no_keys_are_kept_and_no_ceiling_applies() {
    let mut w = world();
    let c = register(&mut w);
    assert!(!w.reg.persistence());
    assert!(w.reg.drain_store(w.now, wall_ms(), usize::MAX).is_empty());
    assert_eq!(w.reg.sweep_counters(None), 0);
    let g = w.sas.pin();
    let sa2 = g
        .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
        .unwrap()
        .sa();
    assert_eq!(sa2.seq_ceiling(), u32::MAX);
}

/// A write that fails leaves the SAs' ceilings where they are and the records are written
/// again; a later success raises them, and answers taken out of order never lower one.
#[test]
fn a_failed_write_keeps_the_ceilings_and_writes_again() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions {
        seq_step: 64,
        store_may_lose_writes: false,
    });
    let c = register(&mut w);
    let wall = wall_ms();
    assert_eq!(puts(w.reg.drain_store(w.now, wall, usize::MAX)).len(), 1);
    w.reg.store_written();
    let sa2 = {
        let g = w.sas.pin();
        g.outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .unwrap()
            .sa()
            .clone()
    };
    assert_eq!(sa2.seq_ceiling(), 64);
    sa2.force_last_seq_sent(40);
    assert_eq!(w.reg.sweep_counters(None), 1);
    let recs = puts(w.reg.drain_store(w.now, wall, usize::MAX));
    assert_eq!(recs[0].sets[0].out_ceiling[0], 104);
    w.reg.store_failed();
    assert_eq!(sa2.seq_ceiling(), 64, "not raised by a failed write");
    assert_eq!(w.reg.store_backlog(), 1, "written again");
    // meanwhile the SA went on: the sweep raises again, the next record carries the newest
    sa2.force_last_seq_sent(90);
    w.reg.sweep_counters(None);
    let recs = puts(w.reg.drain_store(w.now, wall, usize::MAX));
    assert_eq!(recs[0].sets[0].out_ceiling[0], 154);
    w.reg.store_written();
    assert_eq!(sa2.seq_ceiling(), 154);
    // a raise that comes back late never lowers the ceiling
    sa2.raise_seq_ceiling(104);
    assert_eq!(sa2.seq_ceiling(), 154);
    // at most `max` records a drain
    assert!(w.reg.drain_store(w.now, wall, 0).is_empty());
}

/// A re-registered UE (a current and an old set) comes back with both, in their roles, and a
/// store that may have lost writes makes the SAs skip one more step.
#[test]
fn roles_come_back_and_a_lossy_store_skips_a_step() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions::default());
    let c = register(&mut w);
    let (spi2, _, _) = crate::registration_flow::re_register_over(
        &mut w,
        (c.spi_ps, &c.server, c.port_ps),
        (0x2000, 0x2001),
        7010,
        3,
        0x31,
    );
    let rec = puts(w.reg.drain_store(w.now, wall_ms(), usize::MAX)).remove(0);
    let roles: Vec<SetRole> = rec.sets.iter().map(|s| s.role).collect();
    assert_eq!(roles, [SetRole::Current, SetRole::Old]);
    let mut r = world();
    r.reg.enable_persistence(PersistOptions {
        seq_step: SEQ_STEP,
        store_may_lose_writes: true,
    });
    let done = r.reg.restore(&rec, r.now, wall_ms());
    assert_eq!((done.sets, done.failed), (2, 0));
    r.reg.check_sa_invariants().unwrap();
    let g = r.sas.pin();
    assert!(g.inbound(spi2).is_some() && g.inbound(c.spi_ps).is_some());
    // the old set's SA toward the UE's port-s resumes past ceiling + one more step
    let old = g
        .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
        .unwrap();
    assert_eq!(old.set_state(), pcscf::satable::SetState::Old);
    assert_eq!(old.sa().last_seq_sent(), u64::from(2 * SEQ_STEP));
}

/// What this configuration no longer allows is not restored: an algorithm pair taken out of
/// ipsec.algorithms, ports outside ue.protected_ports; a set whose record claims years of life
/// (a clock set back) lives no longer than the cap; a failed authentication's shortened life
/// is what the record says.
#[test]
fn restore_obeys_the_configuration_and_caps_life() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions::default());
    register(&mut w);
    let wall = wall_ms();
    let rec = puts(w.reg.drain_store(w.now, wall, usize::MAX)).remove(0);

    let mut other_alg = rec.clone();
    other_alg.sets[0].alg = pcscf::esp::IntegAlg::AesGmac;
    other_alg.sets[0].ealg = pcscf::esp::EncAlg::Null;
    let mut r = restarted(&w);
    let done = r.reg.restore(&other_alg, r.now, wall);
    assert_eq!((done.sets, done.failed), (0, 1));
    r.reg.check_sa_invariants().unwrap();

    let mut other_ports = rec.clone();
    other_ports.sets[0].port_pc = 9000;
    let mut r = restarted(&w);
    assert_eq!(r.reg.restore(&other_ports, r.now, wall).failed, 1);
    r.reg.check_sa_invariants().unwrap();

    let mut forever = rec.clone();
    forever.sets[0].expires_ms = wall + 10 * 365 * 24 * 3600 * 1000;
    let mut r = restarted(&w);
    assert_eq!(r.reg.restore(&forever, r.now, wall).sets, 1);
    r.reg.handle_timeout(
        r.now + pcscf::control::registrar::MAX_RESTORED_LIFE + Duration::from_secs(1),
    );
    assert_eq!(r.reg.registrations(), 0, "gone at the cap");
    r.reg.check_sa_invariants().unwrap();
}

/// A failed authentication shortens its temporary set's life to the last answer's: the record
/// says so at once (restored, it would otherwise live for reg-await-auth).
#[test]
fn a_failed_authentication_is_written_through() {
    let mut w = world();
    w.reg.enable_persistence(PersistOptions::default());
    let c = challenge(&mut w);
    let wall = wall_ms();
    let rec = puts(w.reg.drain_store(w.now, wall, usize::MAX)).remove(0);
    assert_eq!(rec.sets[0].role, SetRole::Temporary);
    assert!(rec.sets[0].expires_ms - wall > 200_000, "reg-await-auth");
    w.reg.store_written();
    crate::registration_flow::fail_authentication(&mut w, &c);
    let rec = puts(w.reg.drain_store(w.now, wall, usize::MAX)).remove(0);
    assert!(rec.sets[0].expires_ms - wall <= 2_000, "{:?}", rec.sets[0]);
}
