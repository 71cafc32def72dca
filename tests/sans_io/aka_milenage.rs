//! TS 35.208 test sets 1-3 (§4): OPc, TEMP, f1, f1*, f2, f3, f4, f5, f5*.

use pcscf::aka::{Milenage, Sqn, hex_array};

struct TestSet {
    k: &'static str,
    rand: &'static str,
    sqn: &'static str,
    amf: &'static str,
    op: &'static str,
    opc: &'static str,
    f1: &'static str,
    f1_star: &'static str,
    f2: &'static str,
    f3: &'static str,
    f4: &'static str,
    f5: &'static str,
    f5_star: &'static str,
    temp: &'static str,
}

const SETS: [TestSet; 3] = [
    TestSet {
        k: "465b5ce8b199b49faa5f0a2ee238a6bc",
        rand: "23553cbe9637a89d218ae64dae47bf35",
        sqn: "ff9bb4d0b607",
        amf: "b9b9",
        op: "cdc202d5123e20f62b6d676ac72cb318",
        opc: "cd63cb71954a9f4e48a5994e37a02baf",
        f1: "4a9ffac354dfafb3",
        f1_star: "01cfaf9ec4e871e9",
        f2: "a54211d5e3ba50bf",
        f3: "b40ba9a3c58b2a05bbf0d987b21bf8cb",
        f4: "f769bcd751044604127672711c6d3441",
        f5: "aa689c648370",
        f5_star: "451e8beca43b",
        temp: "9e2980c59739da67b136355e3cede6a2",
    },
    TestSet {
        k: "0396eb317b6d1c36f19c1c84cd6ffd16",
        rand: "c00d603103dcee52c4478119494202e8",
        sqn: "fd8eef40df7d",
        amf: "af17",
        op: "ff53bade17df5d4e793073ce9d7579fa",
        opc: "53c15671c60a4b731c55b4a441c0bde2",
        f1: "5df5b31807e258b0",
        f1_star: "a8c016e51ef4a343",
        f2: "d3a628ed988620f0",
        f3: "58c433ff7a7082acd424220f2b67c556",
        f4: "21a8c1f929702adb3e738488b9f5c5da",
        f5: "c47783995f72",
        f5_star: "30f1197061c1",
        temp: "009a9e0996561525f611667bbf79e226",
    },
    TestSet {
        k: "fec86ba6eb707ed08905757b1bb44b8f",
        rand: "9f7c8d021accf4db213ccff0c7f71a6a",
        sqn: "9d0277595ffc",
        amf: "725c",
        op: "dbc59adcb6f9a0ef735477b7fadf8374",
        opc: "1006020f0a478bf6b699f15c062e42b3",
        f1: "9cabc3e99baf7281",
        f1_star: "95814ba2b3044324",
        f2: "8011c48c0c214ed2",
        f3: "5dbdbb2954e8f3cde665b046179a5098",
        f4: "59a92d3b476a0443487055cf88b2307b",
        f5: "33484dc2136b",
        f5_star: "deacdd848cc6",
        temp: "5d9bce854decaf0da93d28b7e35f608c",
    },
];

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex_array::<N>(s).unwrap()
}

#[test]
fn ts_35_208_test_sets_1_to_3() {
    for (i, t) in SETS.iter().enumerate() {
        let set = i + 1;
        let k = h::<16>(t.k);
        let op = h::<16>(t.op);
        let rand = h::<16>(t.rand);
        let sqn = Sqn::from_bytes(h::<6>(t.sqn));
        let amf = h::<2>(t.amf);

        assert_eq!(
            Milenage::compute_opc(&k, &op),
            h::<16>(t.opc),
            "OPc, set {set}"
        );
        let from_op = Milenage::from_op(&k, &op);
        assert_eq!(from_op.opc(), &h::<16>(t.opc), "from_op OPc, set {set}");

        let m = Milenage::new(&k, &h::<16>(t.opc));
        assert_eq!(m.temp(&rand), h::<16>(t.temp), "TEMP, set {set}");
        assert_eq!(m.f1(&rand, sqn, &amf), h::<8>(t.f1), "f1, set {set}");
        assert_eq!(
            m.f1_star(&rand, sqn, &amf),
            h::<8>(t.f1_star),
            "f1*, set {set}"
        );
        assert_eq!(
            m.f1_pair(&rand, sqn, &amf),
            (h::<8>(t.f1), h::<8>(t.f1_star))
        );
        assert_eq!(m.f2(&rand).as_bytes(), &h::<8>(t.f2), "f2, set {set}");
        assert_eq!(m.f3(&rand).as_bytes(), &h::<16>(t.f3), "f3, set {set}");
        assert_eq!(m.f4(&rand).as_bytes(), &h::<16>(t.f4), "f4, set {set}");
        assert_eq!(m.f5(&rand), h::<6>(t.f5), "f5, set {set}");
        assert_eq!(m.f5_star(&rand), h::<6>(t.f5_star), "f5*, set {set}");

        // The batched f2345 agrees with the single functions and with from_op.
        let all = from_op.f2345(&rand);
        assert_eq!(all.res.as_bytes(), &h::<8>(t.f2));
        assert_eq!(all.ck.as_bytes(), &h::<16>(t.f3));
        assert_eq!(all.ik.as_bytes(), &h::<16>(t.f4));
        assert_eq!(all.ak, h::<6>(t.f5));
        assert_eq!(all.ak_star, h::<6>(t.f5_star));
    }
}

#[test]
fn debug_never_prints_keys() {
    let t = &SETS[0];
    let m = Milenage::new(&h::<16>(t.k), &h::<16>(t.opc));
    let rand = h::<16>(t.rand);
    let outs = m.f2345(&rand);
    let text = format!("{m:?} {outs:?} {:?} {:?} {:?}", outs.res, outs.ck, outs.ik);
    for secret in [
        t.k, t.opc, t.f2, t.f3, t.f4, "465b", "cd63", "a542", "b40b", "f769",
    ] {
        assert!(!text.contains(secret), "{text} contains {secret}");
    }
}
