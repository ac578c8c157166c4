//! `output::remove_uncommitted`, in a test binary of its own: it removes every staged
//! path of the process, which would pull files from under the other tests.

use lynx_store::output::{StagedPath, remove_uncommitted};

#[test]
fn uncommitted_staged_paths_are_removed_before_an_exit() {
    let dir = std::env::temp_dir().join(format!("lynx-staged-exit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let done = StagedPath::new(dir.join("done.bin")).unwrap();
    std::fs::write(done.path(), b"kept").unwrap();
    done.commit().unwrap();
    let file = StagedPath::new(dir.join("video.mp4")).unwrap();
    std::fs::write(file.path(), b"half a video").unwrap();
    let folder = StagedPath::new(dir.join("frames")).unwrap();
    std::fs::create_dir(folder.path()).unwrap();
    std::fs::write(folder.path().join("frame_0000.png"), b"x").unwrap();
    assert_eq!(remove_uncommitted(), 2);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["done.bin"]);
    // Dropping them afterwards is harmless.
    drop((file, folder));
    assert_eq!(remove_uncommitted(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
