"""Use cases that span domains, one floor above them: what a subscriber may do with
their own data (data_rights, preferences), the confirmation email of a signup, the
upcoming schedule of campaigns and drip sequences. Faces call these, never the
other way round."""
