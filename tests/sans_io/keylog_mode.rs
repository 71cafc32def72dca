//! `--keylog` holds every SA's keys: a newly created file is owner-only whatever the umask.

use std::os::unix::fs::PermissionsExt;

#[test]
fn new_keylog_is_0600_whatever_the_umask() {
    let dir = std::env::temp_dir().join(format!("pcscf-keylog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("esp_sa");
    let _ = std::fs::remove_file(&path);
    // SAFETY: umask only changes this process's file-creation mask; restored below. It is
    // process-wide: a file another test of this binary creates meanwhile gets the usual 022.
    let old = unsafe { libc::umask(0o022) };
    let f = pcscf::control::open_keylog(&path);
    unsafe { libc::umask(old) };
    drop(f.unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(mode, 0o600, "keylog created with mode {mode:o}");
}
