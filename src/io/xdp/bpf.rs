//! The bpf(2) syscall, called directly: map creation and update, program load (with the
//! verifier log on failure), program info and lookup by id, and `BPF_PROG_TEST_RUN`.
//!
//! Owns: the `union bpf_attr` layouts for the commands used, each as its own `#[repr(C)]`
//! struct holding only the leading fields that command reads. The kernel accepts a shorter
//! attr than its own (it zero-fills the rest), so passing `size_of` of these structs is valid.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;

pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

/// XDP verdicts.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Helper function numbers.
pub const FN_REDIRECT_MAP: i32 = 51;

/// Object names are at most 15 bytes plus NUL.
pub const OBJ_NAME_LEN: usize = 16;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The leading part of `struct bpf_prog_info` (up to and including `name`).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct ProgInfoRaw {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; OBJ_NAME_LEN],
}

/// What we read back about a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
}

/// Issue one bpf(2) command. Returns the non-negative result.
///
/// # Safety
/// `attr` must be the attr layout `cmd` expects, and every pointer inside it must be valid for
/// the access the command makes (reads of inputs, writes of outputs) during the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the caller guarantees the attr matches `cmd` and its pointers are valid; `attr`
    // itself is a live, exclusively borrowed struct of `size_of::<T>()` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: i64) -> OwnedFd {
    // SAFETY: a successful bpf(2) command that creates an object returns a fresh fd that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

fn obj_name(name: &str) -> [u8; OBJ_NAME_LEN] {
    let mut n = [0u8; OBJ_NAME_LEN];
    let b = name.as_bytes();
    let len = b.len().min(OBJ_NAME_LEN - 1);
    n[..len].copy_from_slice(&b[..len]);
    n
}

/// A BPF map (owns its fd).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    value_size: u32,
}

impl Map {
    pub fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> io::Result<Map> {
        let mut a = MapCreateAttr {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_name: obj_name(name),
            ..Default::default()
        };
        // SAFETY: MapCreateAttr is the BPF_MAP_CREATE layout and holds no pointers.
        let r = unsafe { sys_bpf(BPF_MAP_CREATE, &mut a) }.map_err(|e| ctx(e, "BPF_MAP_CREATE"))?;
        Ok(Map {
            fd: fd_from(r),
            value_size,
        })
    }

    /// Set `map[key] = value` (`u32` key and value, e.g. an XSKMAP slot).
    pub fn update_u32(&self, key: u32, value: u32) -> io::Result<()> {
        assert_eq!(self.value_size, 4);
        let mut a = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        // SAFETY: key and value point to live u32s, matching the map's key and value size
        // (value size checked above; every map here is created with a 4-byte key).
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a) }
            .map_err(|e| ctx(e, "BPF_MAP_UPDATE_ELEM"))?;
        Ok(())
    }

    /// Delete `map[key]`.
    pub fn delete_u32(&self, key: u32) -> io::Result<()> {
        let mut a = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            ..Default::default()
        };
        // SAFETY: key points to a live u32 matching the map's key size.
        unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut a) }
            .map_err(|e| ctx(e, "BPF_MAP_DELETE_ELEM"))?;
        Ok(())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A loaded BPF program (owns its fd; the kernel frees it when the last reference goes).
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
}

impl Prog {
    /// Load `insns` as a program of `prog_type`. On failure the error carries the verifier log.
    pub fn load(prog_type: u32, insns: &[u64], name: &str, license: &CStr) -> io::Result<Prog> {
        match Self::load_with_log(prog_type, insns, name, license, None) {
            Ok(p) => Ok(p),
            Err(first) => {
                // Retry with a log buffer so the error says why the verifier refused.
                let mut log = vec![0u8; 1 << 20];
                match Self::load_with_log(prog_type, insns, name, license, Some(&mut log)) {
                    Ok(p) => Ok(p),
                    Err(e) => {
                        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                        let text = String::from_utf8_lossy(&log[..end]);
                        Err(io::Error::new(
                            e.kind(),
                            format!("BPF_PROG_LOAD: {first}; verifier log:\n{text}"),
                        ))
                    }
                }
            }
        }
    }

    fn load_with_log(
        prog_type: u32,
        insns: &[u64],
        name: &str,
        license: &CStr,
        log: Option<&mut Vec<u8>>,
    ) -> io::Result<Prog> {
        let mut a = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: obj_name(name),
            ..Default::default()
        };
        if let Some(log) = log {
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
        }
        // SAFETY: insns (insn_cnt words), the NUL-terminated license and the log buffer
        // (log_size bytes, writable) all outlive the call; u64 words have the size and, on a
        // little-endian machine, the layout of struct bpf_insn.
        let r = unsafe { sys_bpf(BPF_PROG_LOAD, &mut a) }?;
        Ok(Prog { fd: fd_from(r) })
    }

    /// Open a program the kernel knows by id (e.g. the one attached to an interface).
    pub fn from_id(id: u32) -> io::Result<Prog> {
        let mut a = GetFdByIdAttr {
            id,
            ..Default::default()
        };
        // SAFETY: GetFdByIdAttr is the BPF_PROG_GET_FD_BY_ID layout and holds no pointers.
        let r = unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut a) }
            .map_err(|e| ctx(e, "BPF_PROG_GET_FD_BY_ID"))?;
        Ok(Prog { fd: fd_from(r) })
    }

    pub fn info(&self) -> io::Result<ProgInfo> {
        let mut info = ProgInfoRaw::default();
        let mut a = InfoAttr {
            bpf_fd: self.fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<ProgInfoRaw>() as u32,
            info: &mut info as *mut ProgInfoRaw as u64,
        };
        // SAFETY: `info` is a writable ProgInfoRaw of info_len bytes whose pointer fields are
        // zero, so the kernel copies no arrays out; it writes at most info_len bytes.
        unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) }
            .map_err(|e| ctx(e, "BPF_OBJ_GET_INFO_BY_FD"))?;
        let end = info
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(OBJ_NAME_LEN);
        Ok(ProgInfo {
            id: info.id,
            prog_type: info.prog_type,
            name: String::from_utf8_lossy(&info.name[..end]).into_owned(),
        })
    }

    /// Run the program once on `data` (a whole Ethernet frame) and return its verdict
    /// (`BPF_PROG_TEST_RUN`; nothing is sent anywhere).
    pub fn test_run(&self, data: &[u8]) -> io::Result<u32> {
        let mut out = vec![0u8; data.len() + 512];
        let mut a = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: data.len() as u32,
            data_size_out: out.len() as u32,
            data_in: data.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: data_in (data_size_in bytes, read) and data_out (data_size_out bytes,
        // written) are live buffers; no ctx is passed.
        unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut a) }.map_err(|e| ctx(e, "BPF_PROG_TEST_RUN"))?;
        Ok(a.retval)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
