//! Reading recipes: TOML text, files, fragments merged in layers and `key=value` overrides.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Recipe, RecipeError, Result};

impl Recipe {
    /// Parses a recipe from TOML text; `origin` names it in errors (a file path).
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] for TOML syntax errors, wrong types or values and unknown keys,
    /// each naming the key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        Self::parse(text, origin, &[])
    }

    /// Parses a recipe and applies `key=value` overrides (dotted keys such as
    /// `optimizer.lr=1e-4` or `adapter.target_modules=["q_proj","v_proj"]`; a value that is not
    /// TOML is taken as a string).
    ///
    /// # Errors
    /// As [`Recipe::from_toml`]; an override without `=` or into a non-table.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        RecipeBuilder::new()
            .merge_toml(text, origin)?
            .overrides(overrides)?
            .build(origin)
    }

    /// Reads and parses a recipe file with overrides.
    ///
    /// # Errors
    /// [`RecipeError::Io`] when the file cannot be read, else as [`Recipe::parse`].
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// The fully resolved recipe as TOML (every default written out).
    pub fn to_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot print: {e}"),
        };
        if let Some(dir) = &self.adapter_init_from
            && let Some(toml::Value::Table(t)) = value.get_mut("adapter")
        {
            t.insert(
                "init_from".into(),
                toml::Value::String(dir.display().to_string()),
            );
        }
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

/// A recipe assembled from layers: TOML fragments (such as the method presets in the
/// repository's `recipes/` folder), values set from code and `key=value` overrides. A fragment
/// merges into what is there table by table; a set value or an override replaces the key.
///
/// ```
/// use kiln_recipe::RecipeBuilder;
///
/// let recipe = RecipeBuilder::new()
///     .merge_toml("[optimizer]\nlr = 1e-3\n[fit]\noutput_dir = \"runs/x\"", "base.toml")?
///     .merge_toml("[optimizer]\nweight_decay = 0.0", "method.toml")?
///     .set("model.path", &"m.gguf")?
///     .set("data.train", &"train.jsonl")?
///     .set("data.format", &kiln_data::RecordFormat::prompt_completion())?
///     .overrides(&["fit.epochs=3".to_string()])?
///     .build("example")?;
/// assert_eq!((recipe.optimizer.lr, recipe.optimizer.weight_decay), (1e-3, 0.0));
/// assert_eq!(recipe.fit.epochs, 3);
/// # Ok::<(), kiln_recipe::RecipeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecipeBuilder {
    table: toml::Table,
    /// The keys set by `key=value` overrides, with the override as given: an error at such a
    /// key is reported against `--set`, not the file.
    overridden: Vec<(String, String)>,
}

impl RecipeBuilder {
    /// An empty recipe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges a TOML fragment: its tables merge key by key into the ones there, its other
    /// values replace. `origin` names it in errors.
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] for TOML syntax errors.
    pub fn merge_toml(mut self, text: &str, origin: &str) -> Result<Self> {
        let fragment: toml::Table = toml::from_str(text).map_err(|e| RecipeError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        merge_tables(&mut self.table, fragment);
        Ok(self)
    }

    /// Sets the dotted `key` to `value` (replacing what was there).
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] naming the key for a value TOML cannot hold or a key into a
    /// non-table.
    pub fn set(mut self, key: &str, value: &impl Serialize) -> Result<Self> {
        let invalid = |message: String| RecipeError::Invalid {
            origin: format!("`{key}`"),
            message,
        };
        let value = toml::Value::try_from(value).map_err(|e| invalid(e.to_string()))?;
        insert_at(&mut self.table, key, value).map_err(invalid)?;
        Ok(self)
    }

    /// Applies `key=value` overrides, as [`Recipe::parse`] does.
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] for an override without `=` or into a non-table.
    pub fn overrides(mut self, overrides: &[String]) -> Result<Self> {
        for o in overrides {
            apply_override(&mut self.table, o).map_err(|message| RecipeError::Invalid {
                origin: format!("--set {o}"),
                message,
            })?;
            if let Some((key, _)) = o.split_once('=') {
                self.overridden.push((key.trim().to_string(), o.clone()));
            }
        }
        Ok(self)
    }

    /// The value at the dotted `key`, `None` where there is none.
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] naming the key when the value has another type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let mut value = None;
        let mut table = Some(&self.table);
        for part in key.split('.') {
            value = table.and_then(|t| t.get(part));
            table = value.and_then(toml::Value::as_table);
        }
        value
            .map(|v| {
                v.clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| RecipeError::Invalid {
                        origin: format!("`{key}`"),
                        message: e.to_string(),
                    })
            })
            .transpose()
    }

    /// The recipe, checked as [`Recipe::parse`] checks a file; `origin` names it in errors.
    ///
    /// # Errors
    /// [`RecipeError::Invalid`] for wrong types or values, unknown keys and missing settings,
    /// each naming the key.
    pub fn build(self, origin: &str) -> Result<Recipe> {
        let invalid = |message: String| RecipeError::Invalid {
            origin: origin.to_string(),
            message,
        };
        // An error at a key an override set (or inside it) is the override's.
        let blame = |key: &str, message: String| {
            let by = self
                .overridden
                .iter()
                .rev()
                .find(|(k, _)| key == k || key.starts_with(&format!("{k}.")));
            match by {
                Some((_, spec)) => RecipeError::Invalid {
                    origin: format!("--set {spec}"),
                    message,
                },
                None => invalid(message),
            }
        };
        let mut value = self.table.clone();
        // `adapter.init_from` names a directory, not a field of the method's configuration.
        let mut init_from = None;
        if let Some(toml::Value::Table(adapter)) = value.get_mut("adapter")
            && let Some(dir) = adapter.remove("init_from")
        {
            let toml::Value::String(dir) = dir else {
                return Err(blame(
                    "adapter.init_from",
                    format!("`adapter.init_from`: expected a directory, found {dir}"),
                ));
            };
            let dir = std::path::PathBuf::from(dir);
            if adapter.is_empty() {
                // Only the directory: the method's settings are the saved adapter's.
                let mut saved = kiln_peft::read_adapter_config(&dir)?;
                saved.common_mut().inference_mode = false;
                let table = toml::Value::try_from(&saved).map_err(|e| invalid(e.to_string()))?;
                value.insert("adapter".into(), table);
            }
            init_from = Some(dir);
        }
        let recipe: Recipe = serde_path_to_error::deserialize(toml::Value::Table(value.clone()))
            .map_err(|e| {
                let mut path = e.path().to_string();
                let inner = e.into_inner();
                let mut message = inner.message().to_string();
                // `[adapter]` is a tagged enum, whose fields serde reads from a buffer that
                // loses their names: read the table again as its method's own type.
                if path == "adapter"
                    && let Some(toml::Value::Table(t)) = value.get("adapter")
                    && let Some((key, m)) = adapter_field_error(t)
                {
                    path = format!("adapter.{key}");
                    message = m;
                }
                if path == "." || message.contains(&format!("`{path}`")) {
                    blame(&path, message)
                } else {
                    blame(&path, format!("`{path}`: {message}"))
                }
            })?;
        // Sections such as `[adapter]` accept PEFT's files, which carry fields kiln does not
        // use; a recipe is written by hand, so every key must mean something. A key that does
        // not survive a round trip through the recipe's fields was ignored: report it.
        let back = toml::Value::try_from(&recipe).map_err(|e| invalid(e.to_string()))?;
        let mut unknown = BTreeSet::new();
        unknown_keys(&toml::Value::Table(value), &back, "", &mut unknown);
        if let Some(key) = unknown.into_iter().next() {
            return Err(blame(&key, format!("unknown key `{key}`")));
        }
        recipe.validate().map_err(invalid)?;
        let mut recipe = recipe;
        recipe.adapter_init_from = init_from;
        recipe.data.packing = Some(recipe.packing());
        Ok(recipe)
    }
}

/// The field and message of the error that reading `[adapter]` as its `peft_type`'s own
/// configuration gives, if any.
fn adapter_field_error(table: &toml::Table) -> Option<(String, String)> {
    fn read<T: DeserializeOwned>(value: toml::Value) -> Option<(String, String)> {
        serde_path_to_error::deserialize::<_, T>(value)
            .err()
            .map(|e| (e.path().to_string(), e.into_inner().message().to_string()))
    }
    let mut fields = table.clone();
    let kind = fields.remove("peft_type")?;
    let value = toml::Value::Table(fields);
    match kind.as_str()? {
        "LORA" => read::<kiln_peft::LoraConfig>(value),
        "IA3" => read::<kiln_peft::Ia3Config>(value),
        "PROMPT_TUNING" => read::<kiln_peft::PromptTuningConfig>(value),
        "PREFIX_TUNING" => read::<kiln_peft::PrefixTuningConfig>(value),
        "BOTTLENECK" => read::<kiln_peft::BottleneckConfig>(value),
        _ => None,
    }
    .filter(|(path, _)| path != ".")
}

/// Merges `from` into `into`: tables key by key, other values replace.
fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_tables(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Sets `key=value` (dotted key) in `table`.
fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected key=value".to_string())?;
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    insert_at(table, key.trim(), value)
}

/// Inserts `value` at the dotted `key`, creating the tables on the way.
fn insert_at(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let mut cur = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", parts[..=i].join(".")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Keys of `given` that do not appear in `parsed` (dotted paths).
fn unknown_keys(
    given: &toml::Value,
    parsed: &toml::Value,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    if let (toml::Value::Table(g), toml::Value::Table(p)) = (given, parsed) {
        for (k, v) in g {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match p.get(k) {
                Some(pv) => unknown_keys(v, pv, &path, out),
                None => {
                    out.insert(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use kiln_peft::AdapterConfig;
    use kiln_train::Schedule;

    use super::*;

    const RECIPE: &str = r#"
[model]
path = "m.gguf"

[data]
train = "train.jsonl"
format = { format = "prompt_completion" }
style = { style = "chat_template" }
max_len = 64

[adapter]
peft_type = "LORA"
r = 4
lora_alpha = 8
target_modules = ["q_proj", "v_proj"]

[optimizer]
lr = 2e-3

[schedule]
kind = "linear"
warmup_ratio = 0.1

[fit]
batch_size = 4
output_dir = "runs/x"
"#;

    #[test]
    fn errors_name_the_adapter_key_and_the_override() {
        let err = Recipe::from_toml(&RECIPE.replace("r = 4", "r = \"abc\""), "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.toml: `adapter.r`"), "{err}");
        let err = Recipe::parse(RECIPE, "r.toml", &["adapter.r=\"abc\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set adapter.r=\"abc\": `adapter.r`"),
            "{err}"
        );
        let err = Recipe::parse(RECIPE, "r.toml", &["fit.epoch=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--set fit.epoch=3: "), "{err}");
        // A key of the file stays the file's.
        let err = Recipe::parse(
            &RECIPE.replace("lr = 2e-3", "lr = 2e-3\nlrr = 1"),
            "r.toml",
            &["fit.epochs=3".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("r.toml: "), "{err}");
    }

    /// Bounded fuzzing of recipe TOML and `--set` overrides: every mutation parses to a recipe
    /// or to an error; never a panic. A recipe that parses prints as TOML that parses back to it.
    #[test]
    fn mutated_recipes_and_overrides_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let keys = [
            "fit.epochs",
            "fit",
            "adapter.r",
            "adapter.peft_type",
            "optimizer.lr",
            "data.max_len",
            "schedule.kind",
            "model",
            "x.y.z",
            ".",
            "fit..epochs",
        ];
        let values = [
            "3",
            "-1",
            "0",
            "1e400",
            "\"abc\"",
            "[1, 2]",
            "{ a = 1 }",
            "",
            "=",
            "\"IA3\"",
            "true",
        ];
        let mut parsed = 0;
        for _ in 0..400 {
            let mut b = RECIPE.as_bytes().to_vec();
            for _ in 0..next() % 3 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = match next() % 6 {
                    0 => b'"',
                    1 => b'=',
                    2 => b'[',
                    3 => b'\n',
                    _ => b' ' + (next() % 95) as u8,
                };
            }
            let text = String::from_utf8_lossy(&b);
            let overrides: Vec<String> = (0..next() % 3)
                .map(|_| {
                    let k = keys[(next() % keys.len() as u64) as usize];
                    let v = values[(next() % values.len() as u64) as usize];
                    format!("{k}={v}")
                })
                .collect();
            if let Ok(recipe) = Recipe::parse(&text, "fuzz.toml", &overrides) {
                parsed += 1;
                let again = Recipe::from_toml(&recipe.to_toml(), "printed").unwrap();
                assert_eq!(again, recipe, "{text}\n{overrides:?}");
            }
        }
        assert!(parsed > 0);
    }

    #[test]
    fn parses_and_round_trips() {
        let r = Recipe::from_toml(RECIPE, "r.toml").unwrap();
        assert_eq!(r.optimizer.lr, 2e-3);
        assert_eq!(r.fit.batch_size, 4);
        let Some(AdapterConfig::Lora(l)) = &r.adapter else {
            panic!("{:?}", r.adapter)
        };
        assert_eq!((l.r, l.lora_alpha), (4, 8.0));
        let again = Recipe::from_toml(&r.to_toml(), "printed").unwrap();
        assert_eq!(again, r);
        assert_eq!(
            r.schedule.schedule(100),
            Schedule::Linear {
                warmup_steps: 10,
                total_steps: 100
            }
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (section, bad, key) in [
            (
                "[optimizer]",
                "learning_rate = 1.0",
                "optimizer.learning_rate",
            ),
            ("[adapter]", "rank = 4", "adapter.rank"),
            ("[data]", "maxlen = 3", "data.maxlen"),
            ("[fit]", "epoch = 3", "epoch"),
        ] {
            let text = RECIPE.replace(section, &format!("{section}\n{bad}"));
            let err = Recipe::from_toml(&text, "r.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.starts_with("r.toml"), "{err}");
        }
        let err = Recipe::from_toml(&format!("epochs = 3\n{RECIPE}"), "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Recipe::parse(RECIPE, "r.toml", &["fit.batch_size=\"x\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
        let err = Recipe::parse(RECIPE, "r.toml", &["schedule.kind=\"zigzag\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("zigzag"), "{err}");
        let err = Recipe::parse(RECIPE, "r.toml", &["fit.batch_size=0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn overrides_apply() {
        let r = Recipe::parse(
            RECIPE,
            "r.toml",
            &[
                "optimizer.lr=1e-4".into(),
                "adapter.target_modules=[\"q_proj\"]".into(),
                "fit.output_dir=elsewhere".into(),
                "seed=7".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.optimizer.lr, 1e-4);
        assert_eq!(r.fit.output_dir, Some(PathBuf::from("elsewhere")));
        assert_eq!(r.seed, 7);
        let Some(AdapterConfig::Lora(l)) = &r.adapter else {
            panic!()
        };
        assert_eq!(l.target_modules, vec!["q_proj".to_string()]);
        let err = Recipe::parse(RECIPE, "r.toml", &["optimizer".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key=value"), "{err}");
    }

    #[test]
    fn fragments_merge_table_by_table() {
        let b = RecipeBuilder::new()
            .merge_toml("[optimizer]\nlr = 1.0\nweight_decay = 0.5", "a.toml")
            .unwrap()
            .merge_toml("[optimizer]\nlr = 2.0", "b.toml")
            .unwrap();
        assert_eq!(b.get::<f64>("optimizer.weight_decay").unwrap(), Some(0.5));
        assert_eq!(b.get::<f64>("optimizer.lr").unwrap(), Some(2.0));
        assert_eq!(b.get::<f64>("optimizer.eps").unwrap(), None);
        let err = b.get::<String>("optimizer.lr").unwrap_err().to_string();
        assert!(err.contains("optimizer.lr"), "{err}");
        let err = RecipeBuilder::new()
            .merge_toml("[optimizer", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml"), "{err}");
        let err = b.set("optimizer.lr.x", &1).unwrap_err().to_string();
        assert!(err.contains("not a table"), "{err}");
    }

    #[test]
    fn layers_build_what_one_file_parses() {
        let (head, tail) = RECIPE.split_at(RECIPE.find("[optimizer]").unwrap());
        let layered = RecipeBuilder::new()
            .merge_toml(head, "head")
            .unwrap()
            .merge_toml(tail, "tail")
            .unwrap()
            .set("fit.output_dir", &PathBuf::from("runs/y"))
            .unwrap()
            .build("layers")
            .unwrap();
        let mut whole = Recipe::from_toml(RECIPE, "r.toml").unwrap();
        whole.fit.output_dir = Some(PathBuf::from("runs/y"));
        assert_eq!(layered, whole);
        let err = RecipeBuilder::new()
            .merge_toml(RECIPE, "r.toml")
            .unwrap()
            .set("fit.epoch", &3)
            .unwrap()
            .build("layers")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("layers") && err.contains("epoch"), "{err}");
    }

    #[test]
    fn packing_defaults_follow_the_data_and_the_method() {
        let r = Recipe::from_toml(RECIPE, "r.toml").unwrap();
        assert_eq!(r.data.packing, Some(true), "SFT data packs by default");
        assert!(r.fit_config().packing && !r.fit_config().group_by_length);
        assert!(r.to_toml().contains("packing = true"), "{}", r.to_toml());
        assert_eq!(Recipe::from_toml(&r.to_toml(), "printed").unwrap(), r);

        let off = Recipe::parse(RECIPE, "r.toml", &["data.packing=false".into()]).unwrap();
        assert!(!off.fit_config().packing);
        let grouped = Recipe::parse(
            RECIPE,
            "r.toml",
            &[
                "data.group_by_length=true".into(),
                "data.packing_row_len=64".into(),
            ],
        )
        .unwrap();
        let fit = grouped.fit_config();
        assert!(fit.group_by_length && fit.packing);
        assert_eq!(fit.packing_row_len, Some(64));
        assert_eq!(fit.batch_size, 4);

        // Plain text (continued pre-training) is not SFT: padded unless asked.
        let text = RECIPE.replace(
            r#"format = { format = "prompt_completion" }"#,
            r#"format = { format = "text" }"#,
        );
        let r = Recipe::from_toml(&text, "text.toml").unwrap();
        assert_eq!(r.data.packing, Some(false));
        let r = Recipe::parse(&text, "text.toml", &["data.packing=true".into()]).unwrap();
        assert!(r.fit_config().packing);

        // Prompt and prefix tuning prepend virtual tokens per row: never packed.
        let start = RECIPE.find("[adapter]").unwrap();
        let end = RECIPE.find("[optimizer]").unwrap();
        for method in ["PROMPT_TUNING", "PREFIX_TUNING"] {
            let prompt = format!(
                "{}[adapter]\npeft_type = \"{method}\"\n\n{}",
                &RECIPE[..start],
                &RECIPE[end..]
            );
            let r = Recipe::from_toml(&prompt, "p.toml").unwrap();
            assert_eq!(r.data.packing, Some(false), "{method}");
            let err = Recipe::parse(&prompt, "p.toml", &["data.packing=true".into()])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("data.packing = true") && err.contains(method),
                "{err}"
            );
        }

        let err = Recipe::parse(RECIPE, "r.toml", &["data.packing_row_len=32".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.packing_row_len (32) is below data.max_len (64)"),
            "{err}"
        );
        let err = Recipe::parse(RECIPE, "r.toml", &["data.packing=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("packing"), "{err}");
    }
}
