//! The farmgate plugin SDK. The plugin contract lands with the plugin runtime.
