//! What the registrar persists, and how it is sealed: the records of the registration state
//! that let a restarted P-CSCF serve its registered UEs without a re-registration (the
//! write-through store of `daemon::state` keeps them), their byte encoding, and the AEAD seal
//! that keeps the ESP keys in them from ever being written in the clear.
//!
//! Owns, sans-IO (bytes in, bytes out; no file, socket or clock):
//! - [`BindingRecord`] / [`SetRecord`]: one binding (a UE's registration, its IMPI) with its SA
//!   sets: SPIs, ports, algorithms, expiry (wall-clock milliseconds since the UNIX epoch: a
//!   restart has no `Instant` of the last run), CK/IK, the outbound sequence ceilings and the
//!   inbound high-water marks (RFC 4303 §3.3.3 / §3.4.3 across a restart: see
//!   `Registrar::restore`);
//! - the encoding ([`BindingRecord::encode`] / [`BindingRecord::decode`]): length-prefixed
//!   fields, every length checked against what is left, so a truncated or altered record is an
//!   error, never a panic or a huge allocation;
//! - the seal ([`Sealer`]): AES-256-GCM under a key of its own for each record, derived from the
//!   operator's key file and a random 128-bit salt stored with the record (so no key ever meets
//!   a second nonce: NIST SP 800-38D §8's limit on random nonces under one key does not apply,
//!   however many records are written), the record's storage key as associated data (a record
//!   moved under another key does not open). Storage keys are a keyed hash of the IMPI
//!   ([`Sealer::key_of`]): the store names no subscriber in the clear either. Two salts collide
//!   with probability about n²/2^129 after n records.
//!
//! Rotating the key file (a restart with a new key) costs every UE a re-registration, nothing
//! else. The seal gives integrity, not freshness: whoever can write to the store can put back
//! an older record of the same IMPI (README "Registrations that survive").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use hmac::Mac;
use zeroize::Zeroizing;

use crate::esp::{EncAlg, IntegAlg};

/// The encoding's version: the first byte of every plaintext record.
const RECORD_VERSION: u8 = 1;
/// The seal's version: the first byte of every stored value.
const SEAL_VERSION: u8 = 1;
/// The random salt a record's key is derived from.
const SALT: usize = 16;
const TAG: usize = 16;
/// The nonce: each record's key seals once, so a fixed one is unique under it.
const NONCE: [u8; 12] = [0; 12];
/// Associated data before the storage key: the purpose and the seal's version.
const AAD_LABEL: &[u8] = b"pcscf state record v1";
/// A record holds at most this many sets: current, old, retiring and the challenges
/// (`registrar::MAX_TEMPORARY`); more is a corrupt record.
pub const MAX_SETS: usize = 3 + crate::control::registrar::MAX_TEMPORARY;
/// The longest field a record may hold (an IMPI, a Route value, a Contact): past it the
/// record is corrupt. SIP messages are far smaller (`dataplane::MSG_MAX`).
const MAX_FIELD: usize = 1 << 16;
/// IMPUs a record may name at most.
const MAX_IMPUS: usize = 256;
/// The storage key's length: a truncated HMAC-SHA-256 of the IMPI.
pub const KEY_LEN: usize = 16;

/// Which slot of its binding a set holds (`registrar::Binding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetRole {
    /// A challenge in progress (reg-await-auth); becomes current when the protected
    /// REGISTER completes it.
    Temporary,
    /// The set in use.
    Current,
    /// Replaced by a re-registration, until its expiry (TS 33.203 §7.4).
    Old,
    /// Displaced by a second re-registration, for a transaction's life.
    Retiring,
}

impl SetRole {
    /// Its name, as `pcscf ctl` shows it.
    pub fn name(self) -> &'static str {
        match self {
            SetRole::Temporary => "temporary",
            SetRole::Current => "current",
            SetRole::Old => "old",
            SetRole::Retiring => "retiring",
        }
    }

    fn code(self) -> u8 {
        match self {
            SetRole::Temporary => 0,
            SetRole::Current => 1,
            SetRole::Old => 2,
            SetRole::Retiring => 3,
        }
    }

    fn from_code(c: u8) -> Option<SetRole> {
        Some(match c {
            0 => SetRole::Temporary,
            1 => SetRole::Current,
            2 => SetRole::Old,
            3 => SetRole::Retiring,
            _ => return None,
        })
    }
}

/// One SA set as stored: what `Registrar::restore` needs to install its four SAs again with
/// the SPIs and ports the UE knows.
#[derive(Clone, PartialEq, Eq)]
pub struct SetRecord {
    pub role: SetRole,
    pub ue: IpAddr,
    pub spi_pc: u32,
    pub spi_ps: u32,
    pub port_pc: u16,
    pub port_ps: u16,
    pub port_uc: u16,
    pub port_us: u16,
    pub spi_uc: u32,
    pub spi_us: u32,
    pub alg: IntegAlg,
    pub ealg: EncAlg,
    /// The UE's Security-Client (a temporary set's protected REGISTER must repeat it).
    pub client: Vec<u8>,
    /// When the set expires: milliseconds since the UNIX epoch.
    pub expires_ms: u64,
    /// CK ‖ IK (TS 33.203 Annex I derives the ESP keys from them).
    pub ck_ik: Zeroizing<[u8; 32]>,
    /// The outbound SAs' sequence ceilings, toward the UE's port-s (SA2) and port-c (SA3):
    /// neither has sent past its ceiling.
    pub out_ceiling: [u32; 2],
    /// The inbound SAs' highest accepted sequence numbers when last written: on our spi-s (SA1)
    /// and spi-c (SA4).
    pub in_top: [u32; 2],
}

impl std::fmt::Debug for SetRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetRecord")
            .field("role", &self.role)
            .field("ue", &self.ue)
            .field(
                "spis",
                &(self.spi_pc, self.spi_ps, self.spi_uc, self.spi_us),
            )
            .field(
                "ports",
                &(self.port_pc, self.port_ps, self.port_uc, self.port_us),
            )
            .field("expires_ms", &self.expires_ms)
            .field("out_ceiling", &self.out_ceiling)
            .field("in_top", &self.in_top)
            .finish_non_exhaustive()
    }
}

/// What the workers were given at the 200 (`satable::Registration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegRecord {
    pub pai: Vec<u8>,
    pub route: Vec<u8>,
    pub impus: Vec<Vec<u8>>,
    pub next_hop: SocketAddr,
    pub next_hop_tcp: bool,
}

/// One binding: a private identity's registration and its SA sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRecord {
    pub impi: Vec<u8>,
    pub contact: Vec<u8>,
    pub reg: Option<RegRecord>,
    pub sets: Vec<SetRecord>,
}

/// Why a stored value could not be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its fields say, or bytes left over.
    Truncated,
    /// A version this build does not read.
    Version,
    /// The seal did not open: another key, or altered bytes.
    Seal,
    /// A field out of its range (an unknown role or algorithm, too many sets).
    Field(&'static str),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("record truncated"),
            RecordError::Version => f.write_str("record of an unknown version"),
            RecordError::Seal => {
                f.write_str("seal does not open (another seal key, or altered bytes)")
            }
            RecordError::Field(what) => write!(f, "record field out of range: {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Appends fields to a record.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
}

/// Reads fields off a record; every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let n = self.u32()? as usize;
        if n > MAX_FIELD {
            return Err(RecordError::Field("length"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn ip(&mut self) -> Result<IpAddr, RecordError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(RecordError::Field("address family")),
        }
    }
    fn token<T>(
        &mut self,
        parse: fn(&[u8]) -> Option<T>,
        what: &'static str,
    ) -> Result<T, RecordError> {
        parse(&self.bytes()?).ok_or(RecordError::Field(what))
    }
}

impl BindingRecord {
    /// The plaintext bytes (to be sealed: they hold CK/IK), in a buffer wiped on drop.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // the exact length: the buffer never grows (a reallocation would leave a copy of the
        // keys in freed memory)
        let mut w = Writer(Vec::with_capacity(self.encoded_len()));
        w.u8(RECORD_VERSION);
        w.bytes(&self.impi);
        w.bytes(&self.contact);
        match &self.reg {
            None => w.u8(0),
            Some(r) => {
                w.u8(1);
                w.bytes(&r.pai);
                w.bytes(&r.route);
                w.u16(r.impus.len() as u16);
                for u in &r.impus {
                    w.bytes(u);
                }
                w.ip(r.next_hop.ip());
                w.u16(r.next_hop.port());
                w.u8(u8::from(r.next_hop_tcp));
            }
        }
        w.u8(self.sets.len() as u8);
        for s in &self.sets {
            w.u8(s.role.code());
            w.ip(s.ue);
            for spi in [s.spi_pc, s.spi_ps, s.spi_uc, s.spi_us] {
                w.u32(spi);
            }
            for p in [s.port_pc, s.port_ps, s.port_uc, s.port_us] {
                w.u16(p);
            }
            w.bytes(s.alg.token().as_bytes());
            w.bytes(s.ealg.token().as_bytes());
            w.bytes(&s.client);
            w.u64(s.expires_ms);
            w.0.extend_from_slice(&s.ck_ik[..]);
            for v in s.out_ceiling.into_iter().chain(s.in_top) {
                w.u32(v);
            }
        }
        Zeroizing::new(w.0)
    }

    /// The length of [`BindingRecord::encode`]'s bytes.
    fn encoded_len(&self) -> usize {
        let ip = |a: &IpAddr| if a.is_ipv4() { 5 } else { 17 };
        let b = |x: &[u8]| 4 + x.len();
        let reg = self.reg.as_ref().map_or(0, |r| {
            b(&r.pai)
                + b(&r.route)
                + 2
                + r.impus.iter().map(|u| b(u)).sum::<usize>()
                + ip(&r.next_hop.ip())
                + 3
        });
        let sets: usize = self
            .sets
            .iter()
            .map(|s| {
                1 + ip(&s.ue)
                    + 16
                    + 8
                    + b(s.alg.token().as_bytes())
                    + b(s.ealg.token().as_bytes())
                    + b(&s.client)
                    + 8
                    + 32
                    + 16
            })
            .sum();
        1 + b(&self.impi) + b(&self.contact) + 1 + reg + 1 + sets
    }

    /// Reads back what [`BindingRecord::encode`] wrote; anything else is an error.
    pub fn decode(b: &[u8]) -> Result<BindingRecord, RecordError> {
        let mut r = Reader(b);
        if r.u8()? != RECORD_VERSION {
            return Err(RecordError::Version);
        }
        let impi = r.bytes()?;
        let contact = r.bytes()?;
        let reg = match r.u8()? {
            0 => None,
            1 => {
                let pai = r.bytes()?;
                let route = r.bytes()?;
                let n = usize::from(r.u16()?);
                if n > MAX_IMPUS {
                    return Err(RecordError::Field("IMPUs"));
                }
                let impus = (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?;
                let ip = r.ip()?;
                let next_hop = SocketAddr::new(ip, r.u16()?);
                let next_hop_tcp = r.u8()? != 0;
                Some(RegRecord {
                    pai,
                    route,
                    impus,
                    next_hop,
                    next_hop_tcp,
                })
            }
            _ => return Err(RecordError::Field("registration flag")),
        };
        let n = usize::from(r.u8()?);
        if n > MAX_SETS {
            return Err(RecordError::Field("sets"));
        }
        let mut sets = Vec::with_capacity(n);
        for _ in 0..n {
            let role = SetRole::from_code(r.u8()?).ok_or(RecordError::Field("role"))?;
            let ue = r.ip()?;
            let [spi_pc, spi_ps, spi_uc, spi_us] = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
            let [port_pc, port_ps, port_uc, port_us] = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
            let alg = r.token(IntegAlg::from_token, "integrity algorithm")?;
            let ealg = r.token(EncAlg::from_token, "encryption algorithm")?;
            let client = r.bytes()?;
            let expires_ms = r.u64()?;
            let ck_ik = Zeroizing::new(r.array::<32>()?);
            let out_ceiling = [r.u32()?, r.u32()?];
            let in_top = [r.u32()?, r.u32()?];
            sets.push(SetRecord {
                role,
                ue,
                spi_pc,
                spi_ps,
                port_pc,
                port_ps,
                port_uc,
                port_us,
                spi_uc,
                spi_us,
                alg,
                ealg,
                client,
                expires_ms,
                ck_ik,
                out_ceiling,
                in_top,
            });
        }
        if !r.0.is_empty() {
            return Err(RecordError::Truncated);
        }
        Ok(BindingRecord {
            impi,
            contact,
            reg,
            sets,
        })
    }
}

/// Seals and opens stored records under the operator's key (the `state.seal_key_file`), and
/// names them by a keyed hash of their IMPI. `Debug` shows no key.
pub struct Sealer {
    seal: Zeroizing<[u8; 32]>,
    index: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

/// HMAC-SHA-256 of `data` under `key`.
fn hmac256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes any key length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

impl Sealer {
    /// From the 32 bytes of the key file: one subkey seals (AES-256-GCM), another names the
    /// records (HMAC-SHA-256), each derived with HMAC-SHA-256 under its own label, so the file's
    /// key is used for nothing else.
    pub fn new(master: &[u8; 32]) -> Sealer {
        Sealer {
            seal: hmac256(master, b"pcscf state seal key"),
            index: hmac256(master, b"pcscf state index key"),
        }
    }

    /// The AEAD of one record: its key is HMAC-SHA-256 of its salt under the seal subkey.
    fn record_aead(&self, salt: &[u8]) -> Aes256Gcm {
        let k = hmac256(
            &self.seal[..],
            &[b"pcscf state record key ".as_slice(), salt].concat(),
        );
        Aes256Gcm::new_from_slice(&k[..]).expect("a 32-byte key")
    }

    /// The storage key of a binding: the first [`KEY_LEN`] bytes of HMAC-SHA-256 of its IMPI.
    pub fn key_of(&self, impi: &[u8]) -> [u8; KEY_LEN] {
        let h = hmac256(&self.index[..], impi);
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(&h[..KEY_LEN]);
        k
    }

    fn aad(key: &[u8]) -> Vec<u8> {
        [AAD_LABEL, key].concat()
    }

    /// Seals `plain` for storage under `key` with the salt given: version ‖ salt ‖ ciphertext
    /// ‖ tag. ([`Sealer::seal`] draws the salt; this is its known-answer form.)
    pub fn seal_with_salt(&self, key: &[u8], plain: &[u8], salt: [u8; SALT]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + SALT + plain.len() + TAG);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&salt);
        out.extend_from_slice(plain);
        let aad = Sealer::aad(key);
        let tag = self
            .record_aead(&salt)
            .encrypt_inout_detached(&NONCE.into(), &aad, (&mut out[1 + SALT..]).into())
            .expect("a record is far below GCM's length limit");
        out.extend_from_slice(&tag);
        out
    }

    /// [`Sealer::seal_with_salt`] with a random salt from the OS.
    pub fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
        let mut salt = [0u8; SALT];
        getrandom::fill(&mut salt)?;
        Ok(self.seal_with_salt(key, plain, salt))
    }

    /// Opens a stored value sealed under `key`: the plaintext, wiped on drop.
    pub fn open(&self, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, RecordError> {
        if sealed.len() < 1 + SALT + TAG {
            return Err(RecordError::Truncated);
        }
        if sealed[0] != SEAL_VERSION {
            return Err(RecordError::Version);
        }
        let salt = &sealed[1..1 + SALT];
        let (body, tag) = sealed[1 + SALT..].split_at(sealed.len() - 1 - SALT - TAG);
        let tag: [u8; TAG] = tag.try_into().expect("length checked");
        let mut plain = Zeroizing::new(body.to_vec());
        self.record_aead(salt)
            .decrypt_inout_detached(
                &NONCE.into(),
                &Sealer::aad(key),
                (&mut plain[..]).into(),
                &tag.into(),
            )
            .map_err(|_| RecordError::Seal)?;
        Ok(plain)
    }

    /// Encodes and seals a binding: its storage key and the value to store.
    pub fn seal_binding(
        &self,
        rec: &BindingRecord,
    ) -> Result<([u8; KEY_LEN], Vec<u8>), getrandom::Error> {
        let key = self.key_of(&rec.impi);
        Ok((key, self.seal(&key, &rec.encode())?))
    }

    /// Opens and decodes a stored binding; its IMPI must hash to the key it was stored under.
    pub fn open_binding(&self, key: &[u8], sealed: &[u8]) -> Result<BindingRecord, RecordError> {
        let rec = BindingRecord::decode(&self.open(key, sealed)?)?;
        if self.key_of(&rec.impi)[..] != *key {
            return Err(RecordError::Field("storage key"));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(role: SetRole, ue: IpAddr) -> SetRecord {
        SetRecord {
            role,
            ue,
            spi_pc: 0x1001,
            spi_ps: 0x1002,
            port_pc: 6100,
            port_ps: 6101,
            port_uc: 5100,
            port_us: 5101,
            spi_uc: 0xaaaa_0001,
            spi_us: 0xaaaa_0002,
            alg: IntegAlg::HmacSha1_96,
            ealg: EncAlg::AesCbc,
            client: b"ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=5100;port-s=5101"
                .to_vec(),
            expires_ms: 1_800_000_000_123,
            ck_ik: Zeroizing::new([0x5a; 32]),
            out_ceiling: [1 << 20, 2 << 20],
            in_top: [17, 4_000_000_000],
        }
    }

    pub(crate) fn sample() -> BindingRecord {
        BindingRecord {
            impi: b"001010000000001@ims.mnc001.mcc001.3gppnetwork.org".to_vec(),
            contact: b"<sip:ue@10.46.0.6:5101>".to_vec(),
            reg: Some(RegRecord {
                pai: b"<sip:+15550001@ims.example>".to_vec(),
                route: b"<sip:scscf.ims.example;lr>".to_vec(),
                impus: vec![
                    b"sip:+15550001@ims.example".to_vec(),
                    b"tel:+15550001".to_vec(),
                ],
                next_hop: "[2001:db8::20]:5060".parse().unwrap(),
                next_hop_tcp: true,
            }),
            sets: vec![
                set(SetRole::Current, "10.46.0.6".parse().unwrap()),
                set(SetRole::Old, "2001:db8::6".parse().unwrap()),
                set(SetRole::Temporary, "10.46.0.7".parse().unwrap()),
            ],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = sample();
        let b = r.encode();
        assert_eq!(b.len(), r.encoded_len(), "the exact length is reserved");
        assert_eq!(BindingRecord::decode(&b).unwrap(), r);
        let bare = BindingRecord {
            reg: None,
            sets: Vec::new(),
            ..r
        };
        assert_eq!(BindingRecord::decode(&bare.encode()).unwrap(), bare);
    }

    /// Every truncation, and every single-byte change of the version, count and tag fields, is
    /// an error, never a panic.
    #[test]
    fn truncated_or_altered_records_are_errors() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(BindingRecord::decode(&b[..n]).is_err(), "cut at {n}");
        }
        let mut longer = b.to_vec();
        longer.push(0);
        assert_eq!(BindingRecord::decode(&longer), Err(RecordError::Truncated));
        for i in 0..b.len() {
            for v in [0u8, 0xff, b[i] ^ 0x80] {
                let mut x = b.to_vec();
                x[i] = v;
                // any outcome but a panic; a huge length is refused before allocating
                let _ = BindingRecord::decode(&x);
            }
        }
    }

    /// Known answer: the seal of a fixed record under a fixed key and nonce, opened again; and
    /// the subkeys are HMAC-SHA-256 of their labels (checked against an independent
    /// computation of AES-256-GCM over the same inputs).
    #[test]
    fn the_seal_opens_under_its_key_only() {
        let s = Sealer::new(&[7u8; 32]);
        let r = sample();
        let (key, sealed) = s.seal_binding(&r).unwrap();
        assert_eq!(key, s.key_of(&r.impi));
        assert_eq!(s.open_binding(&key, &sealed).unwrap(), r);
        // the plaintext's CK/IK bytes appear nowhere in the sealed value
        assert!(!sealed.windows(32).any(|w| w == [0x5a; 32]));
        assert!(!sealed.windows(r.impi.len()).any(|w| w == r.impi.as_slice()));
        // another key file
        let other = Sealer::new(&[8u8; 32]);
        assert_eq!(other.open_binding(&key, &sealed), Err(RecordError::Seal));
        // moved under another binding's key
        let k2 = s.key_of(b"someone-else");
        assert_eq!(s.open_binding(&k2, &sealed), Err(RecordError::Seal));
        // any flipped bit
        for i in 1..sealed.len() {
            let mut x = sealed.clone();
            x[i] ^= 1;
            assert_eq!(s.open_binding(&key, &x), Err(RecordError::Seal), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(s.open_binding(&key, &sealed[..n]).is_err());
        }
        // two seals of one record differ (fresh nonces)
        assert_ne!(s.seal_binding(&r).unwrap().1, sealed);
    }

    /// AES-256-GCM known answer (the McGrew–Viega test case 14: key 0^256, IV 0^96,
    /// P = 0^128), and the seal is that construction under the record's derived key: version ‖
    /// salt ‖ AES-256-GCM(HMAC-SHA-256(seal subkey, label ‖ salt), nonce 0, AAD = label ‖
    /// storage key).
    #[test]
    fn seal_known_answer() {
        let zero = Aes256Gcm::new_from_slice(&[0u8; 32]).unwrap();
        let mut p = [0u8; 16];
        let t = zero
            .encrypt_inout_detached(&[0u8; 12].into(), b"", (&mut p[..]).into())
            .unwrap();
        assert_eq!(
            [p.to_vec(), t.to_vec()].concat(),
            hex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
        );
        let s = Sealer::new(&[9u8; 32]);
        let salt = [0xa5u8; 16];
        let sealed = s.seal_with_salt(b"k", b"plaintext", salt);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(&sealed[1..17], &salt);
        // the same by hand
        let seal = hmac256(&[9u8; 32], b"pcscf state seal key");
        let k = hmac256(
            &seal[..],
            &[b"pcscf state record key ".as_slice(), &salt].concat(),
        );
        let mut body = *b"plaintext";
        let tag = Aes256Gcm::new_from_slice(&k[..])
            .unwrap()
            .encrypt_inout_detached(
                &[0u8; 12].into(),
                b"pcscf state record v1k",
                (&mut body[..]).into(),
            )
            .unwrap();
        assert_eq!(&sealed[17..], [body.as_slice(), tag.as_slice()].concat());
        assert_eq!(&s.open(b"k", &sealed).unwrap()[..], b"plaintext");
        // HMAC-SHA-256 itself: RFC 4231 test case 2
        assert_eq!(
            hmac256(b"Jefe", b"what do ya want for nothing?")[..],
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
