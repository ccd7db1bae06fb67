-- A small persistent key/value space per plugin (e.g. a webhook sink's delivery cursor).
CREATE TABLE plugin_state (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (plugin, key)
);
