//! The registrar's side of persistence: which bindings changed (write-through), their records
//! ([`crate::control::store`]), the counters sweep that keeps the persisted sequence ceilings
//! ahead of the SAs, and the restore of a binding at start. Still sans-IO: the daemon's state
//! thread of control (`daemon::state`) seals, writes and reads; time comes in as `now` and the
//! wall clock as milliseconds since the UNIX epoch (`wall_ms`), since a record outlives the
//! process whose `Instant`s it was written with.
//!
//! Sequence numbers across a restart (RFC 4303 §3.3.3, §3.4.3):
//! - outbound: every SA sends only up to a ceiling that is already in the store; the sweep
//!   raises it ([`SEQ_STEP`] ahead) once the SA is within half a step, and the raise reaches
//!   the SA only after the record holding it is written ([`Registrar::store_written`]). A
//!   restored SA resumes after its persisted ceiling, so no number (nor GCM/GMAC IV) is used
//!   twice, whenever the process died. An SA that outruns the sweep is held at its ceiling
//!   (`esp_seq_ceiling` drops), never past it.
//! - inbound: the highest number accepted is written when the sweep sees it move; a restored
//!   window refuses everything up to it. What was accepted after the last write and before a
//!   crash could be replayed once after the restart: the exposure is one sweep round (a clean
//!   stop writes exact values). SIP absorbs such a replay as a retransmission.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Binding, Persist, Registrar, SEQ_STEP, SaSet, SetKeys, StoreWrite, Timer};
use crate::control::store::{BindingRecord, RegRecord, SetRecord, SetRole};
use crate::satable::{Registration, SetState};

/// What [`Registrar::restore`] did with one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Sets installed again, with their SPIs and ports.
    pub sets: usize,
    /// Sets past their expiry: left out.
    pub expired: usize,
    /// Sets that could not be installed (an SPI or port another set holds, an SPI outside
    /// this configuration's range, an algorithm no longer configured): left out, logged.
    pub failed: usize,
}

impl Registrar {
    /// Turns the write-through on: from now on every change of a binding or its SA sets is
    /// handed out by [`Registrar::drain_store`], and sets keep their CK/IK for their record.
    /// Call it before the first message (sets made before it are not persisted).
    pub fn enable_persistence(&mut self) {
        let sweep = self.bindings.keys().copied().collect();
        self.persist = Some(Persist {
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

    /// Records changed since the last call, for the store: a binding with SA sets is put, an
    /// IMPI with no binding (or no set) left is deleted. Until [`Registrar::store_written`]
    /// or [`Registrar::store_failed`] is called, the ceilings raised in these records stay off
    /// the SAs.
    pub fn drain_store(&mut self, now: Instant, wall_ms: u64) -> Vec<StoreWrite> {
        let Some(p) = &mut self.persist else {
            return Vec::new();
        };
        let dirty: Vec<Arc<[u8]>> = p.dirty.drain().collect();
        let mut raises = std::mem::take(&mut p.raises);
        p.raises_draining.append(&mut raises);
        let mut out = Vec::with_capacity(dirty.len());
        for impi in &dirty {
            let rec = self
                .by_impi
                .get(impi)
                .and_then(|id| self.bindings.get(id))
                .and_then(|b| record_of(b, now, wall_ms));
            out.push(match rec {
                Some(r) => StoreWrite::Put(r),
                None => StoreWrite::Delete(impi.clone()),
            });
        }
        if let Some(p) = &mut self.persist {
            p.draining.extend(dirty);
        }
        out
    }

    /// What the last [`Registrar::drain_store`] handed out is written: its raised ceilings go
    /// to the SAs.
    pub fn store_written(&mut self) {
        if let Some(p) = &mut self.persist {
            p.draining.clear();
            for (sa, ceiling) in p.raises_draining.drain(..) {
                sa.set_seq_ceiling(ceiling);
            }
        }
    }

    /// What the last [`Registrar::drain_store`] handed out could not be written: those records
    /// are written again at the next drain, their ceilings stay where they are.
    pub fn store_failed(&mut self) {
        if let Some(p) = &mut self.persist {
            let again = std::mem::take(&mut p.draining);
            p.dirty.extend(again);
            let mut r = std::mem::take(&mut p.raises_draining);
            p.raises.append(&mut r);
        }
    }

    /// Records waiting to be drained.
    pub fn store_backlog(&self) -> usize {
        self.persist.as_ref().map_or(0, |p| p.dirty.len())
    }

    /// One step of the counters sweep: up to `budget` bindings (a round over all of them
    /// takes `bindings / budget` calls), each set's outbound ceilings raised where the SA is
    /// within half a [`SEQ_STEP`] of its ceiling, and its inbound high-water marks taken where
    /// they moved; a binding that changed is written at the next drain. `budget: None` visits
    /// every binding (a clean stop). The bindings it marked.
    pub fn sweep_counters(&mut self, budget: Option<usize>) -> usize {
        let Some(p) = &mut self.persist else {
            return 0;
        };
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
                    let ceiling = set.out_ceiling[i];
                    if ceiling < u32::MAX && sent + u64::from(SEQ_STEP / 2) > u64::from(ceiling) {
                        let raised = (sent + u64::from(SEQ_STEP)).min(u64::from(u32::MAX)) as u32;
                        set.out_ceiling[i] = raised;
                        p.raises.push((e.sa().clone(), raised));
                        changed = true;
                    }
                }
                for (i, spi) in [set.spi_ps, set.spi_pc].into_iter().enumerate() {
                    if let Some(e) = g.inbound(spi).filter(|e| e.binding() == id) {
                        let top = e.sa().highest_seq_received() as u32;
                        if top > set.in_top[i] {
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
        for s in live {
            let left = Duration::from_millis(s.expires_ms - wall_ms);
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
                Ok(()) => done.sets += 1,
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
        if let Some(b) = self.bindings.get_mut(&id) {
            b.contact = rec.contact.as_slice().into();
            if b.current.is_some() {
                b.reg = reg;
            }
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

    /// One restored set into the table and its binding slot.
    fn restore_set(
        &mut self,
        id: u64,
        mut set: SaSet,
        role: SetRole,
        reg: Option<&Arc<Registration>>,
    ) -> Result<(), String> {
        let keys = set.keys.clone().ok_or("no keys")?;
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
        // resumes after the stored ceilings; the raised ones reach the SAs once written
        if let Err(e) = self.install(&set, keys.ck(), keys.ik(), id, Some(inbound)) {
            self.remove_set(&set, id);
            return Err(e);
        }
        {
            let g = self.sas_view.pin();
            let outs = [
                (set.port_us, set.port_pc, set.spi_us),
                (set.port_uc, set.port_ps, set.spi_uc),
            ];
            for (i, (port, lport, _)) in outs.into_iter().enumerate() {
                if let Some(e) = g.outbound(set.ue, port, lport) {
                    let raised = set.out_ceiling[i].saturating_add(SEQ_STEP);
                    set.out_ceiling[i] = raised;
                    if let Some(p) = &mut self.persist {
                        p.raises.push((e.sa().clone(), raised));
                    }
                }
            }
        }
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
        let slot = match role {
            SetRole::Temporary => {
                b.temporary.push(set);
                None
            }
            SetRole::Current => b.current.replace(Box::new(set)),
            SetRole::Old => b.old.replace(Box::new(set)),
            SetRole::Retiring => b.retiring.replace(Box::new(set)),
        };
        self.arm(at, timer);
        if let Some(dup) = slot {
            let spi = dup.spi_pc;
            // put the first one back, remove the duplicate's SAs
            let b = self.bindings.get_mut(&id).expect("just used");
            let second = match role {
                SetRole::Current => b.current.replace(dup),
                SetRole::Old => b.old.replace(dup),
                _ => b.retiring.replace(dup),
            };
            if let Some(second) = second {
                self.remove_set(&second, id);
            }
            return Err(format!("a second {role:?} set beside SPI {spi}"));
        }
        Ok(())
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
