//! LFS pointers found in received packs, for files committed through the reference client
//! (`git-lfs`, Debian's package): every tracked file's object, nothing else.

use std::fs;

use reposafe_testkit::lfs::sha256_hex;

use super::{fetch, support::Git};
use crate::git::{lfs::pointers_in_packs, list_packs, LfsPointer};

#[test]
fn pointers_committed_with_git_lfs_are_found_in_the_fetched_pack() {
    let git = Git::new();
    let lfs = git.command(git.root()).args(["lfs", "version"]).output();
    assert!(
        lfs.is_ok_and(|out| out.status.success()),
        "this test needs git-lfs (Debian package git-lfs)"
    );
    let root = git.root();
    let work = root.join("work");
    git.run(root, &["init", "-q", "work"]);
    git.run(&work, &["lfs", "install", "--local"]);
    git.run(&work, &["lfs", "track", "*.bin"]);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("f{i}.bin"),
                super::support::pseudo_random_bytes(i + 7, 50_000 + i as usize),
            )
        })
        .collect();
    for (name, bytes) in &files {
        fs::write(work.join(name), bytes).expect("write");
    }
    // The same content twice names one object; a text about LFS is not a pointer.
    fs::write(work.join("copy.bin"), &files[0].1).expect("write");
    fs::write(
        work.join("README.md"),
        "version https://git-lfs.github.com/spec/v1\nis how pointers start\n",
    )
    .expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "lfs files"]);
    let origin = root.join("origin.git");
    git.clone_mirror(&work, &origin);

    let mirror = root.join("mirror.git");
    fetch(&mirror, &format!("file://{}", origin.display())).expect("fetch");
    let packs: Vec<_> = list_packs(&mirror)
        .expect("packs")
        .into_iter()
        .map(|p| p.path)
        .collect();
    let found = pointers_in_packs(&mirror, &packs).expect("scan");
    let expected: std::collections::BTreeSet<LfsPointer> = files
        .iter()
        .map(|(_, bytes)| LfsPointer {
            oid: sha256_hex(bytes),
            size: bytes.len() as u64,
        })
        .collect();
    assert_eq!(found, expected);
}
