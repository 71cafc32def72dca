//! The registrar's side of persistence: which bindings changed (write-through), their records
//! ([`crate::control::store`]), the counters sweep that keeps the persisted sequence ceilings
//! ahead of the SAs, and the restore of a binding at start. Still sans-IO: the daemon's state
//! thread of control (`daemon::state`) seals, writes and reads; time comes in as `now` and the
//! wall clock as milliseconds since the UNIX epoch (`wall_ms`), since a record outlives the
//! process whose `Instant`s it was written with.
//!
//! Sequence numbers across a restart (RFC 4303 §3.3.3, §3.4.3):
//! - outbound: an SA of a set the store holds sends only up to a ceiling that is in the store;
//!   the sweep raises the set's ceiling (a step ahead, [`super::PersistOptions::seq_step`])
//!   once the SA is within half a step, and the raise reaches the SA only after a record holding
//!   it is written ([`Registrar::store_written`], by `fetch_max`: writes answered out of order
//!   never lower it). A fresh set's SAs start at one step before any record of theirs is
//!   written: if the process dies first, the set is not in the store, and neither are its keys.
//!   A restored SA resumes after its persisted ceiling (one step further when the store may
//!   lose acknowledged writes), so no number (nor GCM/GMAC IV) is used twice, whenever the
//!   process died. An SA that outruns the sweep is held at its ceiling (`esp_seq_ceiling`
//!   drops), never past it.
//! - inbound: the highest number accepted is written when the sweep sees it move by
//!   [`super::IN_TOP_STEP`]; a restored window refuses everything up to it. What was accepted
//!   after the last write and before a crash could be replayed once after the restart (a
//!   clean stop, after the workers stopped, writes exact values). SIP absorbs such a replay as
//!   a retransmission.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Binding, IN_TOP_STEP, MAX_RESTORED_LIFE, MAX_TEMPORARY, Persist, PersistOptions,
    REG_AWAIT_AUTH, Registrar, SaSet, SetCounts, SetKeys, StoreWrite, Timer,
};
use crate::control::store::{BindingRecord, RegRecord, SetRecord, SetRole};
use crate::satable::{Registration, SetState};

/// What [`Registrar::restore`] did with one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Sets installed again, with their SPIs and ports.
    pub sets: usize,
    /// Sets past their expiry: left out.
    pub expired: usize,
    /// Sets that could not be installed (an SPI or port another set holds, an SPI or port
    /// outside this configuration's ranges, an algorithm pair no longer configured): left out,
    /// logged.
    pub failed: usize,
    /// Outbound SAs restored past half their 32-bit sequence space (a crash loop spends a
    /// step per restart): their UEs will need a new set before long.
    pub worn: usize,
}

impl Registrar {
    /// Turns the write-through on: from now on every change of a binding or its SA sets is
    /// handed out by [`Registrar::drain_store`], and sets keep their CK/IK for their record.
    /// Call it before the first message (sets made before it are not persisted).
    pub fn enable_persistence(&mut self, opts: PersistOptions) {
        let sweep = self.bindings.keys().copied().collect();
        let opts = PersistOptions {
            seq_step: opts.seq_step.max(16),
            ..opts
        };
        self.persist = Some(Persist {
            opts,
            sweep,
            ..Persist::default()
        });
    }

    /// Whether the state is persisted.
    pub fn persistence(&self) -> bool {
        self.persist.is_some()
    }

    /// `binding`'s record must be written again.
    pub(super) fn touch(&mut self, binding: u64) {
        if let Some(p) = &mut self.persist
            && let Some(b) = self.bindings.get(&binding)
        {
            p.dirty.insert(b.impi.clone());
        }
    }

    /// Up to `max` records changed since the last call, for the store: a binding with SA sets
    /// is put, an IMPI with no binding (or no set) left is deleted. Until
    /// [`Registrar::store_written`] or [`Registrar::store_failed`] is called, the ceilings in
    /// these records stay off the SAs.
    pub fn drain_store(&mut self, now: Instant, wall_ms: u64, max: usize) -> Vec<StoreWrite> {
        let Some(p) = &mut self.persist else {
            return Vec::new();
        };
        let batch: Vec<Arc<[u8]>> = p.dirty.iter().take(max).cloned().collect();
        for impi in &batch {
            p.dirty.remove(impi);
        }
        let g = self.sas_view.pin();
        let mut out = Vec::with_capacity(batch.len());
        let mut ceilings = Vec::new();
        for impi in &batch {
            let found = self
                .by_impi
                .get(impi)
                .and_then(|&id| Some((id, self.bindings.get(&id)?)));
            let rec = found.and_then(|(id, b)| {
                let rec = record_of(b, now, wall_ms)?;
                // the SAs whose ceilings this record makes durable
                for set in b.sets().filter(|s| s.keys.is_some()) {
                    let outs = [
                        (set.port_us, set.port_pc, set.spi_us),
                        (set.port_uc, set.port_ps, set.spi_uc),
                    ];
                    for (i, (port, lport, spi)) in outs.into_iter().enumerate() {
                        if let Some(e) = g
                            .outbound(set.ue, port, lport)
                            .filter(|e| e.binding() == id && e.spi() == spi)
                        {
                            ceilings.push((e.sa().clone(), set.out_ceiling[i]));
                        }
                    }
                }
                Some(rec)
            });
            out.push(match rec {
                Some(r) => StoreWrite::Put(r),
                None => StoreWrite::Delete(impi.clone()),
            });
        }
        drop(g);
        if let Some(p) = &mut self.persist {
            p.draining.extend(batch);
            p.draining_ceilings.append(&mut ceilings);
        }
        out
    }

    /// What the last [`Registrar::drain_store`] handed out is written: its ceilings go to the
    /// SAs.
    pub fn store_written(&mut self) {
        if let Some(p) = &mut self.persist {
            p.draining.clear();
            for (sa, ceiling) in p.draining_ceilings.drain(..) {
                sa.raise_seq_ceiling(ceiling);
            }
        }
    }

    /// What the last [`Registrar::drain_store`] handed out could not be written: those records
    /// are written again at a later drain (as they are then), their SAs' ceilings stay.
    pub fn store_failed(&mut self) {
        if let Some(p) = &mut self.persist {
            let again = std::mem::take(&mut p.draining);
            p.dirty.extend(again);
            p.draining_ceilings.clear();
        }
    }

    /// Records waiting to be drained.
    pub fn store_backlog(&self) -> usize {
        self.persist.as_ref().map_or(0, |p| p.dirty.len())
    }

    /// One step of the counters sweep: up to `budget` bindings (a round over all of them
    /// takes `bindings / budget` calls), each set's outbound ceilings raised where the SA is
    /// within half a step of its ceiling, and its inbound high-water marks taken where
    /// they moved; a binding that changed is written at the next drain. `budget: None` visits
    /// every binding (a clean stop). The bindings it marked.
    pub fn sweep_counters(&mut self, budget: Option<usize>) -> usize {
        let Some(p) = &mut self.persist else {
            return 0;
        };
        // a clean stop (every binding) takes every mark exactly
        let exact = budget.is_none();
        let n = budget.unwrap_or(p.sweep.len()).min(p.sweep.len());
        let g = self.sas_view.pin();
        let mut marked = 0;
        for _ in 0..n {
            let Some(id) = p.sweep.pop_front() else {
                break;
            };
            let Some(b) = self.bindings.get_mut(&id) else {
                continue; // gone: dropped from the round
            };
            p.sweep.push_back(id);
            let mut changed = false;
            let sets = b
                .temporary
                .iter_mut()
                .chain(b.current.as_deref_mut())
                .chain(b.old.as_deref_mut())
                .chain(b.retiring.as_deref_mut());
            for set in sets {
                let outs = [
                    (set.port_us, set.port_pc, set.spi_us),
                    (set.port_uc, set.port_ps, set.spi_uc),
                ];
                for (i, (port, lport, spi)) in outs.into_iter().enumerate() {
                    let Some(e) = g
                        .outbound(set.ue, port, lport)
                        .filter(|e| e.binding() == id && e.spi() == spi)
                    else {
                        continue;
                    };
                    let sent = e.sa().last_seq_sent();
                    let (ceiling, step) = (set.out_ceiling[i], u64::from(p.opts.seq_step));
                    if ceiling < u32::MAX && sent + step / 2 > u64::from(ceiling) {
                        set.out_ceiling[i] = (sent + step).min(u64::from(u32::MAX)) as u32;
                        changed = true;
                    }
                }
                if set.keys.is_none() {
                    continue; // not in the store
                }
                for (i, spi) in [set.spi_ps, set.spi_pc].into_iter().enumerate() {
                    if let Some(e) = g.inbound(spi).filter(|e| e.binding() == id) {
                        let top = e.sa().highest_seq_received() as u32;
                        if top >= set.in_top[i].saturating_add(IN_TOP_STEP)
                            || (exact && top > set.in_top[i])
                        {
                            set.in_top[i] = top;
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                p.dirty.insert(b.impi.clone());
                marked += 1;
            }
        }
        marked
    }

    /// Installs a stored binding again (at start, before any message): its sets with the SPIs
    /// and ports the UE knows, their expiry carried over from the wall clock, the outbound
    /// counters resuming after their persisted ceilings and the inbound windows refusing what
    /// was accepted (module doc); the registration the workers were given; the timers; and a
    /// fresh reg event subscription (TS 24.229 §5.2.3: the one of the last run is not known).
    /// A set that cannot be installed is left out and said; the rest of the binding stays.
    pub fn restore(&mut self, rec: &BindingRecord, now: Instant, wall_ms: u64) -> Restored {
        let mut done = Restored::default();
        let live: Vec<&SetRecord> = rec.sets.iter().filter(|s| s.expires_ms > wall_ms).collect();
        done.expired = rec.sets.len() - live.len();
        if live.is_empty() {
            self.touch_impi(&rec.impi);
            return done;
        }
        let id = self.binding_for(&rec.impi, now);
        let reg = rec.reg.as_ref().map(|r| {
            let impus: Vec<&[u8]> = r.impus.iter().map(|u| u.as_slice()).collect();
            let mut g = Registration::with_impus(&r.pai, &r.route, &impus, r.next_hop);
            g.next_hop_tcp = r.next_hop_tcp;
            Arc::new(g)
        });
        let mut temporaries = 0;
        for s in live {
            // a clock set back, or a record from far off, does not make a set live for years
            let cap = if s.role == SetRole::Temporary {
                REG_AWAIT_AUTH
            } else {
                MAX_RESTORED_LIFE
            };
            let left = Duration::from_millis(s.expires_ms - wall_ms).min(cap);
            if s.role == SetRole::Temporary {
                temporaries += 1;
                if temporaries > MAX_TEMPORARY {
                    done.failed += 1;
                    continue;
                }
            }
            let set = SaSet {
                ue: s.ue,
                spi_pc: s.spi_pc,
                spi_ps: s.spi_ps,
                port_pc: s.port_pc,
                port_ps: s.port_ps,
                port_uc: s.port_uc,
                port_us: s.port_us,
                spi_uc: s.spi_uc,
                spi_us: s.spi_us,
                alg: s.alg,
                ealg: s.ealg,
                client: s.client.as_slice().into(),
                expires: now + left,
                keys: Some(SetKeys(s.ck_ik.clone())),
                out_ceiling: s.out_ceiling,
                in_top: s.in_top,
            };
            match self.restore_set(id, set, s.role, reg.as_ref()) {
                Ok(worn) => {
                    done.sets += 1;
                    done.worn += worn;
                }
                Err(e) => {
                    done.failed += 1;
                    crate::control::log::warn(format_args!(
                        "state: a set of {:?} (UE {}, SPIs {}/{}) not restored: {e}",
                        String::from_utf8_lossy(&rec.impi),
                        s.ue,
                        s.spi_pc,
                        s.spi_ps
                    ));
                }
            }
        }
        let mut registered = false;
        if let Some(b) = self.bindings.get_mut(&id) {
            b.contact = rec.contact.as_slice().into();
            registered = b.current.is_some();
        }
        if registered {
            self.set_reg(id, reg);
        }
        // the registration's remaining life: the current set outlives it by SA_GRACE
        let remaining = self
            .bindings
            .get(&id)
            .and_then(|b| b.current.as_ref())
            .map(|c| c.expires.saturating_duration_since(now + super::SA_GRACE));
        if let Some(r) = remaining.filter(|r| !r.is_zero()) {
            let secs = u32::try_from(r.as_secs()).unwrap_or(u32::MAX).max(1);
            self.subscribe_reg_event(id, secs, now);
        }
        self.touch(id);
        self.collect_binding(id);
        if done.sets > 0 {
            self.stats.restored_sets += done.sets as u64;
        }
        done
    }

    /// The record of an IMPI with nothing left to restore is deleted at the next drain.
    fn touch_impi(&mut self, impi: &[u8]) {
        if let Some(p) = &mut self.persist {
            p.dirty.insert(impi.into());
        }
    }

    /// One restored set into the table and its binding slot; how many of its outbound SAs
    /// resume past half their sequence space.
    fn restore_set(
        &mut self,
        id: u64,
        mut set: SaSet,
        role: SetRole,
        reg: Option<&Arc<Registration>>,
    ) -> Result<usize, String> {
        let keys = set.keys.clone().ok_or("no keys")?;
        let opts = self.persist.as_ref().map(|p| p.opts).unwrap_or_default();
        // what this configuration allows (TS 33.203 §7.1: the pairs and ports we offer)
        if !self.cfg.prefs.contains(&(set.alg, set.ealg)) {
            return Err(format!(
                "{}/{} is not among ipsec.algorithms any more",
                set.alg.token(),
                set.ealg.token()
            ));
        }
        let ports = &self.cfg.protected_ports;
        if !ports.contains(&set.port_pc) || !ports.contains(&set.port_ps) {
            return Err(format!(
                "our ports {}/{} are outside ue.protected_ports now",
                set.port_pc, set.port_ps
            ));
        }
        self.sas
            .reserve_exact_spi(set.spi_pc)
            .map_err(|e| format!("our SPI {}: {e}", set.spi_pc))?;
        if let Err(e) = self.sas.reserve_exact_spi(set.spi_ps) {
            let _ = self.sas.remove_inbound(set.spi_pc);
            return Err(format!("our SPI {}: {e}", set.spi_ps));
        }
        let (inbound, outbound) = match role {
            SetRole::Temporary => (SetState::Temporary, SetState::Temporary),
            SetRole::Current => (SetState::New, SetState::New),
            SetRole::Old | SetRole::Retiring => (SetState::New, SetState::Old),
        };
        // RFC 4303 §3.3.3: resume after the stored ceiling (one step further when the store may
        // have lost a raise it acknowledged); send nothing until a step beyond is written
        let margin = if opts.store_may_lose_writes {
            opts.seq_step
        } else {
            0
        };
        let resume = set.out_ceiling.map(|c| c.saturating_add(margin));
        set.out_ceiling = resume;
        if let Err(e) = self.install(&set, keys.ck(), keys.ik(), id, Some(inbound)) {
            self.remove_set(&set, id);
            return Err(e);
        }
        set.out_ceiling = resume.map(|c| c.saturating_add(opts.seq_step));
        let worn = resume.iter().filter(|&&c| c > u32::MAX / 2).count();
        for (port, lport) in [(set.port_us, set.port_pc), (set.port_uc, set.port_ps)] {
            let _ = self.sas.set_outbound_state(set.ue, port, lport, outbound);
        }
        if role != SetRole::Temporary {
            for spi in [set.spi_pc, set.spi_ps] {
                let _ = self.sas.set_inbound_registration(spi, reg.cloned());
            }
        }
        let (at, timer) = (
            set.expires,
            Timer::Set {
                binding: id,
                spi: set.spi_pc,
            },
        );
        let Some(b) = self.bindings.get_mut(&id) else {
            self.remove_set(&set, id);
            return Err("binding gone".into());
        };
        // a slot already filled (a record naming two current sets) is a corrupt record: the
        // later set is left out
        let taken = match role {
            SetRole::Temporary => false,
            SetRole::Current => b.current.is_some(),
            SetRole::Old => b.old.is_some(),
            SetRole::Retiring => b.retiring.is_some(),
        };
        if taken {
            self.remove_set(&set, id);
            return Err(format!("a second {role:?} set in one record"));
        }
        let before = SetCounts::of(b);
        match role {
            SetRole::Temporary => b.temporary.push(set),
            SetRole::Current => b.current = Some(Box::new(set)),
            SetRole::Old => b.old = Some(Box::new(set)),
            SetRole::Retiring => b.retiring = Some(Box::new(set)),
        }
        self.set_counts.moved(before, SetCounts::of(b));
        self.arm(at, timer);
        Ok(worn)
    }
}

/// A binding's record: its sets with their role, expiry on the wall clock and keys. None when
/// it holds no set (nothing to restore: the record is deleted).
fn record_of(b: &Binding, now: Instant, wall_ms: u64) -> Option<BindingRecord> {
    let roles = b
        .temporary
        .iter()
        .map(|s| (s, SetRole::Temporary))
        .chain(b.current.as_deref().map(|s| (s, SetRole::Current)))
        .chain(b.old.as_deref().map(|s| (s, SetRole::Old)))
        .chain(b.retiring.as_deref().map(|s| (s, SetRole::Retiring)));
    let sets: Vec<SetRecord> = roles
        .filter_map(|(s, role)| {
            let keys = s.keys.as_ref()?;
            let left = s.expires.saturating_duration_since(now).as_millis() as u64;
            Some(SetRecord {
                role,
                ue: s.ue,
                spi_pc: s.spi_pc,
                spi_ps: s.spi_ps,
                port_pc: s.port_pc,
                port_ps: s.port_ps,
                port_uc: s.port_uc,
                port_us: s.port_us,
                spi_uc: s.spi_uc,
                spi_us: s.spi_us,
                alg: s.alg,
                ealg: s.ealg,
                client: s.client.to_vec(),
                expires_ms: wall_ms.saturating_add(left),
                ck_ik: keys.0.clone(),
                out_ceiling: s.out_ceiling,
                in_top: s.in_top,
            })
        })
        .collect();
    if sets.is_empty() {
        return None;
    }
    Some(BindingRecord {
        impi: b.impi.to_vec(),
        contact: b.contact.to_vec(),
        reg: b.reg.as_ref().map(|r| RegRecord {
            pai: r.pai().to_vec(),
            route: r.route().to_vec(),
            impus: r.impus().map(<[u8]>::to_vec).collect(),
            next_hop: r.next_hop,
            next_hop_tcp: r.next_hop_tcp,
        }),
        sets,
    })
}
