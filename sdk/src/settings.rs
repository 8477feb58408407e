//! A plugin's settings: the `[plugins.config.NAME] settings` table of farmgate's config, handed
//! over as JSON when an instance starts.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    value: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    /// Parses the JSON object farmgate hands to `init`.
    pub fn from_json(json: &str) -> Result<Settings, String> {
        if json.trim().is_empty() {
            return Ok(Settings::default());
        }
        match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(value)) => Ok(Settings { value }),
            Ok(other) => Err(format!("settings must be a table, not {other}")),
            Err(e) => Err(format!("settings are not valid JSON: {e}")),
        }
    }

    /// The setting `key`, if present; an error names the key when it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.value.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("setting \"{key}\": {e}")),
        }
    }

    /// The setting `key`, which must be present; an error names the key when it is absent or
    /// has the wrong type.
    pub fn require<T: DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        self.get(key)?
            .ok_or_else(|| format!("setting \"{key}\" is required"))
    }

    /// The setting `key`, or `default` when absent.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, String> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// All settings as one typed struct (use `#[serde(default)]` for optional fields). An error
    /// about a value of the wrong type names its key.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, String> {
        let whole = serde_json::Value::Object(self.value.clone());
        serde_json::from_value(whole).map_err(|e| match self.key_at_fault::<T>(&e.to_string()) {
            Some(key) => format!("setting \"{key}\": {e}"),
            None => format!("settings: {e}"),
        })
    }

    /// Which key's value a type error of [`Settings::deserialize`] is about: serde does not say,
    /// so each key is left out in turn, and the one whose absence changes the error is it.
    fn key_at_fault<T: DeserializeOwned>(&self, error: &str) -> Option<&str> {
        if !(error.starts_with("invalid type") || error.starts_with("invalid value")) {
            return None;
        }
        self.value.keys().map(String::as_str).find(|key| {
            let mut without = self.value.clone();
            without.remove(*key);
            match serde_json::from_value::<T>(serde_json::Value::Object(without)) {
                Ok(_) => true,
                Err(e) => e.to_string() != error,
            }
        })
    }

    /// Checks that the setting `key`, when present, is a string equal to one of `choices`; the
    /// error names the key, the value and the choices. For a setting that picks one of the
    /// names another setting defines:
    ///
    /// ```
    /// # use farmgate_sdk::Settings;
    /// # use std::collections::BTreeMap;
    /// let s = Settings::from_json(r#"{"versions": {"v1": "a", "v2": "b"}, "current": "v9"}"#)?;
    /// let versions: BTreeMap<String, String> = s.require("versions")?;
    /// let refused = s.check_one_of("current", versions.keys()).unwrap_err();
    /// assert_eq!(refused, r#"setting "current": "v9" is not one of v1, v2"#);
    /// # Ok::<(), String>(())
    /// ```
    pub fn check_one_of<C: AsRef<str>>(
        &self,
        key: &str,
        choices: impl IntoIterator<Item = C>,
    ) -> Result<(), String> {
        let Some(value) = self.get::<String>(key)? else {
            return Ok(());
        };
        let choices: Vec<C> = choices.into_iter().collect();
        if choices.iter().any(|c| c.as_ref() == value) {
            return Ok(());
        }
        let names: Vec<&str> = choices.iter().map(AsRef::as_ref).collect();
        Err(format!(
            "setting \"{key}\": \"{value}\" is not one of {}",
            names.join(", ")
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access() {
        let s = Settings::from_json(r#"{"farm": "v2", "percent": 10}"#).unwrap();
        assert_eq!(s.get::<String>("farm").unwrap().as_deref(), Some("v2"));
        assert_eq!(s.get_or("percent", 0u32).unwrap(), 10);
        assert_eq!(s.get_or("missing", 5u32).unwrap(), 5);
        assert!(
            s.get::<u32>("farm")
                .unwrap_err()
                .contains("setting \"farm\"")
        );
        assert_eq!(
            s.require::<u32>("missing").unwrap_err(),
            "setting \"missing\" is required"
        );
        assert_eq!(s.require::<u32>("percent").unwrap(), 10);
        assert!(Settings::from_json("[1]").is_err());
        assert!(Settings::from_json("").unwrap().is_empty());

        #[derive(Debug, serde::Deserialize)]
        struct Typed {
            farm: String,
            #[serde(default)]
            header: Option<String>,
        }
        let t: Typed = s.deserialize().unwrap();
        assert_eq!((t.farm.as_str(), t.header), ("v2", None));
        let wrong = Settings::from_json(r#"{"farm": "v2", "header": 3}"#).unwrap();
        let e = wrong.deserialize::<Typed>().unwrap_err();
        assert!(e.starts_with("setting \"header\": invalid type"), "{e}");
        let missing = Settings::from_json(r#"{"header": "x"}"#).unwrap();
        let e = missing.deserialize::<Typed>().unwrap_err();
        assert!(e.contains("missing field `farm`"), "{e}");
    }
}
