//! Persistence, sans-IO: a registered UE's binding is written through as a record, sealed, and
//! restored into a fresh registrar and SA table (a restart) with the SPIs, ports, keys and
//! registration the UE knows; outbound sequence numbers resume past anything sent and the
//! inbound windows refuse what was accepted (RFC 4303 §3.3.3, §3.4.3). Hostile records (an SPI
//! taken or out of range, two current sets, expired sets) are left out without harm.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcscf::aka::digest;
use pcscf::control::registrar::{Registrar, SEQ_STEP, StoreWrite};
use pcscf::control::store::{BindingRecord, Sealer, SetRole};
use pcscf::dataplane::Protection;
use pcscf::esp::EspError;
use pcscf::io::Side;
use pcscf::sip::headers::Digest;
use pcscf::sip::{HeaderName, Message};

use crate::registration_flow::{Challenge, World, challenge, world};
use crate::support::ims::*;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Registers the test UE (REGISTER, 401, protected REGISTER, 200 with a 600 s registration).
fn register(w: &mut World) -> Challenge {
    let c = challenge(w);
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    assert_eq!(out.len(), 1);
    let m = Message::parse(&out[0].payload).unwrap();
    let d = Digest::parse(m.view().header(HeaderName::Authorization).unwrap()).unwrap();
    assert!(d.response().is_some());
    let _ = digest::Qop::None;
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test:6060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>, <tel:+15551230001>\r\nContact: <sip:001010000000001@10.46.0.6:5060>;expires=600\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
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
    fresh.reg.enable_persistence();
    fresh
}

#[test]
fn a_registered_ue_survives_a_restart_with_its_sas_and_counters() {
    let mut w = world();
    w.reg.enable_persistence();
    let c = register(&mut w);
    let wall = wall_ms();
    let recs = puts(w.reg.drain_store(w.now, wall));
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
        w.reg.drain_store(w.now, wall).is_empty(),
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
    let recs = puts(w.reg.drain_store(w.now, wall));
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
    let recs = puts(r.reg.drain_store(r.now, wall + 5_000));
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
    let gone = r.reg.drain_store(r.now, wall);
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
    w.reg.enable_persistence();
    let c = register(&mut w);
    let wall = wall_ms();
    let rec = puts(w.reg.drain_store(w.now, wall)).remove(0);

    // expired
    let mut r = restarted(&w);
    let done = r.reg.restore(&rec, r.now, wall + 700_000);
    assert_eq!((done.sets, done.expired), (0, 1));
    assert_eq!(r.reg.registrations(), 0);
    assert!(matches!(
        &r.reg.drain_store(r.now, wall)[..],
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
    assert!(w.reg.drain_store(w.now, wall_ms()).is_empty());
    assert_eq!(w.reg.sweep_counters(None), 0);
    let g = w.sas.pin();
    let sa2 = g
        .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
        .unwrap()
        .sa();
    assert_eq!(sa2.seq_ceiling(), u32::MAX);
    let _: fn(&mut Registrar) = Registrar::enable_persistence;
}
