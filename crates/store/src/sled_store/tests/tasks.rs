//! Tasks: creation checks, listings, and ending with descendants.

use super::{open, open_db};
use crate::contract::helpers::*;
use crate::{Store, StoreError, TaskFilter};

#[tokio::test]
async fn undecodable_tasks_and_dangling_indexes_are_corrupt_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_task(task(1, "a", "s1", None), event("task.begin")).await.unwrap();
    drop(store);
    {
        let db = open_db(dir.path()).unwrap();
        db.open_tree("tasks").unwrap().insert(tid(1).as_bytes(), b"{nope").unwrap();
        let mut dangling = b"s2\0".to_vec();
        dangling.extend_from_slice(tid(2).as_bytes());
        db.open_tree("tasks_by_session").unwrap().insert(dangling, b"").unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    let err = store.get_task(&tid(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("tasks record {} does not decode", tid(1))), "{err}");
    let err = store.list_tasks(&TaskFilter { session: Some(sid("s2")), ..Default::default() }, 10).await.unwrap_err();
    assert!(err.to_string().contains(&format!("names task {}, which is missing", tid(2))), "{err}");
    assert!(err.to_string().contains("tasks_by_session record"), "{err}");
    let err = store.end_task(&tid(1), 5, event("task.end")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}
