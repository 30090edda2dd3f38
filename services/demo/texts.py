"""What the demo's synthetic people say and are called: obviously made-up names, places and
texts, and how long each channel takes to bring a complaint in."""

from __future__ import annotations

from domain.vocabulary import (
    AllegationSubtype,
    Channel,
    ContactMethod,
    FeedbackCategory,
    FeedbackChannel,
    Sector,
)

# ---------------------------------------------------------------------------------- people

FEMALE_NAMES = ("Amina", "Nyakuoth", "Grace", "Achol", "Fatuma", "Mary", "Awut", "Halima", "Joy")
MALE_NAMES = ("Deng", "Peter", "Ochan", "Lual", "Samuel", "Ali", "Moses", "Kuol")
FAMILY_NAMES = ("Example", "Sample", "Placeholder", "Fictional", "Testcase", "Dummy")
ROLES = (
    "distribution monitor",
    "registration clerk",
    "security guard",
    "driver",
    "teacher at the temporary learning space",
    "water committee contractor",
    "health promoter",
    "shelter construction supervisor",
)
PLACES = (
    "food distribution point",
    "water point 3",
    "registration centre",
    "health post",
    "temporary learning space",
    "cash distribution site",
)
ITEMS = ("food rations", "shelter materials", "cash assistance", "NFI kits", "a registration slot")

ALLEGATION_TEXT = {
    AllegationSubtype.TRANSACTIONAL_SEX: "a {role} at the {place} offered {item} in exchange "
    "for sex",
    AllegationSubtype.EXPLOITATIVE_RELATIONSHIP: "a {role} keeps a relationship with a woman "
    "receiving {item} and threatens to cut her assistance if she ends it",
    AllegationSubtype.SOLICITATION: "a {role} asked for sex before giving {item}",
    AllegationSubtype.RAPE: "a {role} sexually assaulted a woman near the {place}",
    AllegationSubtype.SEXUAL_ASSAULT: "a {role} touched a woman sexually against her will at "
    "the {place}",
    AllegationSubtype.SEXUAL_ACTIVITY_WITH_CHILD: "a {role} has been meeting a child of the "
    "family and giving gifts near the {place}",
}

OTHER_SENSITIVE_TEXT = (
    "a distribution committee member is selling ration cards",
    "a guard at the {place} beat a young man in the queue",
    "staff are diverting fuel meant for the water pumps",
    "a {role} demands money to put families on the {item} list",
)

NON_SENSITIVE: tuple[tuple[FeedbackCategory, Sector, str], ...] = (
    (
        FeedbackCategory.INFORMATION_REQUEST,
        Sector.FOOD_SECURITY,
        "When is the next food distribution in Zone 3?",
    ),
    (FeedbackCategory.SERVICE_COMPLAINT, Sector.WASH, "Water point 5 has been broken for a week."),
    (
        FeedbackCategory.SUGGESTION,
        Sector.SHELTER,
        "Please distribute plastic sheeting before the rains.",
    ),
    (FeedbackCategory.APPRECIATION, Sector.HEALTH, "Thank you for the mobile clinic visits."),
    (
        FeedbackCategory.SERVICE_COMPLAINT,
        Sector.CASH,
        "My cash transfer for this month has not arrived.",
    ),
    (
        FeedbackCategory.INFORMATION_REQUEST,
        Sector.EDUCATION,
        "How can I enrol my children at the learning centre?",
    ),
    (
        FeedbackCategory.SERVICE_COMPLAINT,
        Sector.NUTRITION,
        "The nutrition centre closes before mothers from Zone 6 arrive.",
    ),
    (FeedbackCategory.SUGGESTION, Sector.PROTECTION, "Add lights on the path to the latrines."),
    (
        FeedbackCategory.OTHER,
        Sector.CAMP_MANAGEMENT,
        "Who do we talk to about the new block leader?",
    ),
)

FEEDBACK_CHANNEL = {
    ContactMethod.PHONE: FeedbackChannel.PHONE,
    ContactMethod.SMS: FeedbackChannel.SMS,
    ContactMethod.IN_PERSON: FeedbackChannel.IN_PERSON,
    ContactMethod.EMAIL: FeedbackChannel.EMAIL,
    ContactMethod.THROUGH_TRUSTED_PERSON: FeedbackChannel.COMMUNITY_LEADER,
}

INTAKE_DELAY: dict[Channel, tuple[float, float]] = {
    # minutes between what was said and its recording, by channel
    Channel.HOTLINE: (2, 30),
    Channel.SMS_MESSAGING: (10, 240),
    Channel.COMPLAINT_BOX: (12 * 60, 7 * 24 * 60),
    Channel.IN_PERSON: (5, 60),
    Channel.EMAIL: (30, 24 * 60),
    Channel.WEB_FORM: (30, 24 * 60),
    Channel.COMMUNITY_LEADER: (6 * 60, 3 * 24 * 60),
    Channel.STAFF_MANDATORY_REPORT: (10, 12 * 60),
    Channel.INTERAGENCY_REFERRAL: (60, 48 * 60),
}
