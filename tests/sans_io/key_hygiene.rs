//! Key hygiene: the AKA secrets (CK, IK, RES, HA1 and the CK/IK a 401
//! carries) are not `Copy` and are wiped on drop, and a punted 401's ck/ik hex does not stay in
//! the punt queue's free buffers.

use pcscf::aka::digest::HexDigest;
use pcscf::aka::{Ck, Ik, KeyOutputs, Res};
use pcscf::dataplane::{Datagram, MsgQueue, Protection};
use pcscf::io::Side;
use pcscf::sip::rules::AkaKeys;
use zeroize::ZeroizeOnDrop;

/// Compiles only while `T` is not `Copy` (with `Copy`, `_` has two candidates).
trait NotCopy<A> {
    fn check() {}
}
impl<T: ?Sized> NotCopy<()> for T {}
#[allow(dead_code)]
struct IsCopy;
impl<T: Copy> NotCopy<IsCopy> for T {}

fn wiped_on_drop<T: ZeroizeOnDrop>() {}

#[test]
fn aka_secrets_are_not_copy_and_wiped_on_drop() {
    <AkaKeys as NotCopy<_>>::check();
    <HexDigest as NotCopy<_>>::check();
    <Ck as NotCopy<_>>::check();
    <Ik as NotCopy<_>>::check();
    <Res as NotCopy<_>>::check();
    <KeyOutputs as NotCopy<_>>::check();
    wiped_on_drop::<AkaKeys>();
    wiped_on_drop::<HexDigest>();
    wiped_on_drop::<Ck>();
    wiped_on_drop::<Ik>();
    wiped_on_drop::<Res>();
}

/// A recycled punt buffer holds nothing of the message it carried.
#[test]
fn recycled_punt_buffer_keeps_no_ck_ik() {
    let q = MsgQueue::new(1, None);
    let a = "127.0.0.1:5060".parse().unwrap();
    let ck = "ck=\"000102030405060708090a0b0c0d0e0f\", ik=\"101112131415161718191a1b1c1d1e1f\"";
    let msg = format!("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest {ck}\r\n\r\n");
    q.push(Datagram {
        side: Side::Core,
        protection: Protection::Plain,
        src: a,
        dst: a,
        payload: msg.as_bytes(),
    })
    .unwrap();
    let b = q.pop().unwrap();
    assert_eq!(b.bytes(), msg.as_bytes());
    q.recycle(b);
    // the one buffer again, now with a short message
    q.push(Datagram {
        side: Side::Core,
        protection: Protection::Plain,
        src: a,
        dst: a,
        payload: b"x",
    })
    .unwrap();
    let b = q.pop().unwrap();
    assert_eq!(b.bytes(), b"x");
    assert!(
        b.payload.data[1..].iter().all(|&x| x == 0),
        "stale bytes: {:?}",
        String::from_utf8_lossy(&b.payload.data[..msg.len()])
    );
}
