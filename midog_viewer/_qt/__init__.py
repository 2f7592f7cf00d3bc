"""Qt widgets of the viewer: thin skins over the Qt-free core (nothing outside this folder imports Qt)."""
