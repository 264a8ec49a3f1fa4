"""gettext catalogues: <locale>/LC_MESSAGES/warden.po, read by warden.i18n (docs/localisation.md)."""
