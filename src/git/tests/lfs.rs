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

    let found = fetch_and_scan(root, &origin);
    let expected: std::collections::BTreeSet<LfsPointer> = files
        .iter()
        .map(|(_, bytes)| LfsPointer {
            oid: sha256_hex(bytes),
            size: bytes.len() as u64,
        })
        .collect();
    assert_eq!(found, expected);
}

/// Pointer files are small and alike: a server's pack stores most revisions of one as
/// deltas (against each other, or against a blob). Every revision is found anyway.
#[test]
fn pointers_stored_as_deltas_are_found() {
    let git = Git::new();
    let root = git.root();
    let work = root.join("work");
    git.run(root, &["init", "-q", "work"]);
    let mut expected = std::collections::BTreeSet::new();
    for i in 0..30u64 {
        // Oids alike enough for git to store the pointers as deltas of each other.
        let pointer = LfsPointer {
            oid: format!("{:064x}", 12_345 + i * 7_919),
            size: 2_000 + i,
        };
        let text = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            pointer.oid, pointer.size
        );
        fs::write(work.join("asset.bin"), text).expect("write");
        // A large file changing a little each time: deltas of blobs that are no pointers.
        let mut big = super::support::pseudo_random_bytes(7, 20_000);
        big[i as usize] ^= 1;
        fs::write(work.join("big.dat"), big).expect("write");
        git.run(&work, &["add", "."]);
        git.run(&work, &["commit", "-q", "-m", &format!("revision {i}")]);
        expected.insert(pointer);
    }
    let origin = root.join("origin.git");
    git.clone_mirror(&work, &origin);
    git.run(
        &origin,
        &[
            "repack",
            "-q",
            "-a",
            "-d",
            "-f",
            "--depth=50",
            "--window=250",
        ],
    );
    let listing = git.run(&origin, &["verify-pack", "-v", &pack_index_of(&origin)]);
    // `<id> blob <size> <size in pack> <offset> <depth> <base>`: pointers (< 200 bytes)
    // as deltas.
    let pointer_deltas = listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 5 && f[1] == "blob" && f[2].parse::<u32>().is_ok_and(|n| n < 200))
        .count();
    assert!(pointer_deltas > 20, "few pointers are deltas:\n{listing}");

    assert_eq!(fetch_and_scan(root, &origin), expected);
}

/// The `.idx` of the one pack of a repository.
fn pack_index_of(repo: &std::path::Path) -> String {
    fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .expect("a pack index")
        .display()
        .to_string()
}

/// Fetches `origin` into a new mirror under `root` and scans every pack it has.
fn fetch_and_scan(
    root: &std::path::Path,
    origin: &std::path::Path,
) -> std::collections::BTreeSet<LfsPointer> {
    let mirror = root.join("mirror.git");
    fetch(&mirror, &format!("file://{}", origin.display())).expect("fetch");
    let packs: Vec<_> = list_packs(&mirror)
        .expect("packs")
        .into_iter()
        .map(|p| p.path)
        .collect();
    pointers_in_packs(&mirror, &packs).expect("scan")
}
