//! Models granted by name (`grants.models`): each is a folder of the models
//! directory that `scripts/fetch-models.sh` fills. Granting one grants its
//! weights file (`model.safetensors` or `model.gguf`) as weights under the
//! model's name, and the folder itself, read-only, at `/models/<name>`.

use crate::assembly::spec::{DirGrant, Grants};
use std::path::Path;

/// The command that fetches models, named in every "model missing" message.
pub const FETCH_COMMAND: &str = "bash scripts/fetch-models.sh";

/// Weights file names a model folder may hold, in the order looked for.
const WEIGHTS_FILES: &[&str] = &["model.safetensors", "model.gguf"];

/// Turns `grants.models` into weights and directory grants. A model that is
/// not in `dir` is left out with a warning (naming the fetch command), so
/// the server still starts; its component answers that the model is
/// unavailable.
pub fn grant(grants: &mut Grants, dir: &Path, deployment: &str) {
    for name in &grants.models {
        let folder = dir.join(name);
        let Some(weights) = weights(&folder) else {
            tracing::warn!(
                "deployment `{deployment}`: model `{name}` is not in {} (fetch it with `{FETCH_COMMAND} --models-dir {}`); requests that need it get an error",
                dir.display(),
                dir.display()
            );
            continue;
        };
        grants.weights.entry(name.clone()).or_insert(weights);
        grants.dirs.push(DirGrant {
            host: folder,
            guest: format!("/models/{name}"),
            writable: false,
        });
    }
}

/// The weights file in a model's `folder`, if there is one.
pub fn weights(folder: &Path) -> Option<std::path::PathBuf> {
    WEIGHTS_FILES
        .iter()
        .map(|f| folder.join(f))
        .find(|p| p.is_file())
}

/// Which of the models `names` have no weights in `dir` yet.
pub fn missing(names: &[String], dir: &Path) -> Vec<String> {
    names
        .iter()
        .filter(|n| weights(&dir.join(n)).is_none())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_folder_names() {
        assert!(crate::assembly::spec::valid_model_name("all-minilm-l6-v2"));
        assert!(crate::assembly::spec::valid_model_name(
            "smollm2-135m-instruct"
        ));
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(!crate::assembly::spec::valid_model_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn present_models_grant_weights_and_folder_missing_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("tw-models-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("m1")).unwrap();
        std::fs::write(dir.join("m1/model.gguf"), b"x").unwrap();
        let mut grants = Grants {
            models: vec!["m1".into(), "absent".into()],
            ..Default::default()
        };
        grant(&mut grants, &dir, "d");
        assert_eq!(grants.weights["m1"], dir.join("m1/model.gguf"));
        assert!(!grants.weights.contains_key("absent"));
        assert_eq!(grants.dirs.len(), 1);
        assert_eq!(grants.dirs[0].guest, "/models/m1");
        assert!(!grants.dirs[0].writable);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
