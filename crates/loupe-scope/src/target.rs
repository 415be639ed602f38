//! Target prompts from the papers, by name (docs/design.md, "Target prompts"). Any other
//! text in a config is used as it is.

/// Patchscopes' identity prompt: the model is shown a few `x -> x` pairs, so that the patched
/// last token is decoded back into what it stands for.
pub const IDENTITY: &str = "cat -> cat\n1135 -> 1135\nhello -> hello\n?";

/// Patchscopes' entity-description prompt, used by Superscopes: the patched `x` is described.
pub const ENTITY_DESCRIPTION: &str = "Syria: Country in the Middle East, Leonardo DiCaprio: American actor, Samsung: South Korean multinational major appliance and consumer electronics corporation, x";

/// The names that `target.prompt` may give instead of text.
pub const BUILT_IN: [(&str, &str); 2] = [("identity", IDENTITY), ("entity_description", ENTITY_DESCRIPTION)];

/// The text of a target prompt: a built-in one by name, else the text given.
pub fn target_prompt_text(name_or_text: &str) -> &str {
    BUILT_IN
        .iter()
        .find(|(name, _)| *name == name_or_text)
        .map_or(name_or_text, |(_, text)| text)
}
