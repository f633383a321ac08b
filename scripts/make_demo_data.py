"""Generate the demo raw data for domainft: a fictional bank's support knowledge in three formats.

Run from the project root (stdlib only, deterministic, seed 42)::

    python scripts/make_demo_data.py

Writes (overwriting) into data/raw/:

- ``faq.csv``             FAQ spreadsheet export, columns ``question,answer,category``.
- ``qa_annotated.jsonl``  alpaca-style ``{"instruction", "input", "output"}``, one object a line.
- ``support_chats.csv``   helpdesk chat log, one turn a row: ``session_id,role,text,timestamp``
                          (roles ``customer``/``agent``, a few ``system``; 2-6 turns a session).

Content: "Northwind Ledger Bank", a FICTIONAL bank (the default ``domain.system_prompt``), with
invented products, fees, limits, rates, cut-off times, forms and reference codes that a small
base model cannot know. ``FACTS`` holds 69 facts; each has 5 paraphrased question/answer pairs
(question AND answer reworded, same specifics), spread over the three files: per fact two pairs
go to faq.csv, two to qa_annotated.jsonl (one of them to a chat for every fifth fact) and one to a
chat session. Paraphrases are written to stay well below the near-duplicate threshold (MinHash
Jaccard 0.8 on character 5-grams), so the split puts some of a fact's paraphrases in train and
others in test.

Deliberate defects for the prepare stage (the counts are asserted against ``EXPECTED_DEFECTS``
and printed):

- 6 exact duplicates: 3 in faq.csv, 3 in qa_annotated.jsonl (verbatim, case or whitespace only).
- 6 near duplicates: one or two words changed from an existing pair (faq.csv 3, jsonl 3).
- 3 empty outputs: one faq.csv row with an empty answer, two jsonl records ("" and blanks).
- 5 placeholder inputs in qa_annotated.jsonl: ``<noinput>`` x2, ``N/A`` x2, ``No input`` x1.
- 3 malformed jsonl lines: truncated JSON, a bare JSON string, an object without ``output``.
- 2 outputs shorter than 20 characters (faq.csv 1, jsonl 1).
- 1 answer with a customer email address (jane.doe@example.com, jsonl).
- 1 answer with a phone number (+44 20 7946 0958, support_chats.csv agent turn).
- 1 chat session with an unknown role (``supervisor``).
- 1 chat session that ends on a customer turn.

Also 2 jsonl records carry a real ``input`` (the account type the instruction refers to), and 4
chat sessions start with a ``system`` turn.
"""
from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 42
OUT_DIR = Path("data/raw")

# ----------------------------------------------------------------------------- facts
# Each fact: key, category (faq.csv "category" column), questions[i] pairs with answers[i].
FACTS: list[dict] = [
    # --- cards ---------------------------------------------------------------------------
    dict(key="gold_annual_fee", category="Cards", questions=[
        "What is the annual fee on the Northwind Gold Credit Card?",
        "How much does the Gold credit card cost per year?",
        "Is there a yearly charge for holding a Gold Card?",
        "I'm thinking of getting the Gold card. What will I pay each year to keep it?",
        "Does Northwind charge a membership fee for its Gold credit card?",
    ], answers=[
        "The Northwind Gold Credit Card has an annual fee of £95, charged each year on your card anniversary.",
        "It costs £95 a year. The fee is added to your Gold card statement on the anniversary of opening.",
        "Yes, there is a yearly fee of £95 for the Gold Card, taken on the anniversary of the account.",
        "You would pay £95 per year for the Gold card; we charge it once annually on your account anniversary.",
        "Yes. Gold credit card holders pay a £95 annual fee, billed on the date the card was first opened each year.",
    ]),
    dict(key="lantern_points", category="Cards", questions=[
        "How do Lantern Points work on the Gold card?",
        "How many reward points do I get for spending on my Gold Credit Card?",
        "What are Lantern Points worth and do they expire?",
        "Can you explain the points scheme for Gold cardholders?",
        "If I spend £1,000 on my Gold card, how many points will I earn?",
    ], answers=[
        "The Gold card earns 1 Lantern Point for every £1 you spend. Every 500 points can be redeemed for a £5 statement credit, and points expire after 36 months.",
        "You collect 1 Lantern Point per £1 of card spending. Points are redeemed in blocks of 500 for £5 off your statement and last 36 months.",
        "Each block of 500 Lantern Points converts to a £5 statement credit. Unused points expire 36 months after they are earned.",
        "Gold cardholders earn 1 point per £1 spent. Once you have 500 points you can swap them for a £5 credit, and points run out after 36 months.",
        "You would earn 1,000 Lantern Points, since the Gold card gives 1 point per £1. That is worth £10 as statement credit, at £5 per 500 points.",
    ]),
    dict(key="silver_card", category="Cards", questions=[
        "What are the key terms of the Northwind Silver Credit Card?",
        "Does the Silver credit card have an annual fee, and what is its APR?",
        "What interest rate applies to the Silver card?",
        "How high can the credit limit go on a Silver Card?",
        "Tell me about the Silver card's fees and credit limits.",
    ], answers=[
        "The Silver Credit Card has no annual fee, a representative APR of 24.9%, and credit limits from £250 to £5,000.",
        "There is no annual fee on the Silver card. Its representative rate is 24.9% APR, with limits between £250 and £5,000.",
        "The Silver card charges a representative 24.9% APR on purchases, and it costs nothing to hold.",
        "Silver Card limits start at £250 and go up to £5,000. The card is free to hold and carries a 24.9% representative APR.",
        "Silver cardholders pay no yearly fee. Limits are set between £250 and £5,000, and purchases are charged at 24.9% APR representative.",
    ]),
    dict(key="onyx_card", category="Cards", questions=[
        "What does the Onyx Card cost and what are its benefits?",
        "Is there a foreign transaction fee on the Northwind Onyx Card?",
        "How many free airport lounge visits come with the Onyx card?",
        "What's the yearly fee for Onyx and what do I get for it?",
        "Why would I pay for the Onyx card instead of the Gold?",
    ], answers=[
        "The Onyx Card costs £240 a year. It has no foreign transaction fees (0%) and includes 8 free airport lounge visits per year with the Harbour Lounge Pass.",
        "No, the Onyx Card charges 0% on foreign transactions. It has a £240 annual fee and comes with 8 lounge visits a year through the Harbour Lounge Pass.",
        "Onyx includes 8 complimentary lounge visits each year via the Harbour Lounge Pass, along with 0% foreign transaction fees, for a £240 annual fee.",
        "Onyx carries a £240 annual fee. In return you get 0% fees on spending abroad and the Harbour Lounge Pass with 8 free visits every year.",
        "Onyx costs £240 a year against £95 for Gold, but adds 0% foreign transaction fees and 8 free lounge visits a year with the Harbour Lounge Pass.",
    ]),
    dict(key="credit_min_payment", category="Cards", questions=[
        "What is the minimum payment on a Northwind credit card?",
        "How much do I have to pay each month on my credit card at the very least?",
        "When is my credit card payment due?",
        "How is the minimum repayment calculated, and by when must I pay it?",
        "If my balance is small, what is the lowest monthly payment?",
    ], answers=[
        "The minimum payment is 3% of your balance or £25, whichever is higher. It is due 25 days after your statement date.",
        "At minimum you must pay the greater of £25 or 3% of the statement balance, within 25 days of the statement date.",
        "Payment is due 25 days after the statement date. The minimum is 3% of the balance, or £25 if that is more.",
        "We take 3% of the outstanding balance or £25, whichever is larger, and the payment must reach us 25 days after your statement is issued.",
        "The lowest payment is £25, or 3% of the balance if that is higher; a balance under £25 is paid in full. It falls due 25 days after the statement date.",
    ]),
    dict(key="late_fee", category="Cards", questions=[
        "What happens if I pay my credit card late?",
        "Is there a charge for missing a credit card payment?",
        "What is the over-limit fee on Northwind credit cards?",
        "How much will I be charged if I go over my credit limit or pay late?",
        "Do you charge penalty fees on credit cards?",
    ], answers=[
        "If your payment arrives late we charge a £12 late payment fee. The same £12 fee applies if you go over your credit limit.",
        "Yes, a missed or late payment costs £12. Going over your limit is also charged at £12.",
        "The over-limit fee is £12, and a separate £12 fee is added if a payment is late.",
        "Both cost £12: there is a £12 late payment fee and a £12 over-limit fee.",
        "Yes, two of them: £12 for a late payment and £12 for exceeding your credit limit.",
    ]),
    dict(key="cash_advance", category="Cards", questions=[
        "What does it cost to withdraw cash with my credit card?",
        "Is there a fee for a cash advance on a Northwind credit card?",
        "What interest rate applies to cash withdrawals on my credit card?",
        "I need cash from an ATM using my Gold card. What will I be charged?",
        "How are credit card cash advances charged?",
    ], answers=[
        "A cash advance costs 3% of the amount, minimum £3, and interest at 27.9% APR is charged from the day you take the cash.",
        "Yes, cash advances have a 3% fee with a £3 minimum. Interest on them is 27.9% APR and starts immediately.",
        "Cash withdrawals are charged 27.9% APR from the day of the withdrawal, plus a handling fee of 3% (at least £3).",
        "You will pay a 3% cash fee, at least £3, and 27.9% APR interest from the date of the withdrawal, with no interest-free period.",
        "We charge 3% of each cash advance, minimum £3, and interest of 27.9% APR starts the same day.",
    ]),
    dict(key="balance_transfer", category="Cards", questions=[
        "Does the Silver card offer a balance transfer deal?",
        "How long is the 0% balance transfer period on the Silver Credit Card?",
        "What's the fee for moving a balance to my Northwind Silver card?",
        "Can I transfer debt from another card, and is there a deadline?",
        "What are the balance transfer terms?",
    ], answers=[
        "Yes, the Silver card offers 0% on balance transfers for 18 months, with a 3% transfer fee, if you transfer within 90 days of opening.",
        "The 0% period lasts 18 months. Transfers must be made within 90 days of opening the Silver card and carry a 3% fee.",
        "Moving a balance costs 3% of the amount transferred. You then pay 0% interest on it for 18 months, provided it was made within 90 days of account opening.",
        "Yes, you can move a balance to the Silver card within the first 90 days. It is interest-free for 18 months, with a 3% fee.",
        "Silver card balance transfers are 0% for 18 months with a one-off 3% fee, and must be requested within 90 days of opening the account.",
    ]),
    dict(key="contactless_limit", category="Cards", questions=[
        "What is the contactless limit on Northwind cards?",
        "How much can I spend with a single contactless tap?",
        "Why did the shop ask for my PIN on a £120 purchase?",
        "Is there a maximum for contactless payments?",
        "Can I pay for a £150 purchase by tapping my debit card?",
    ], answers=[
        "The contactless limit is £100 per transaction. Above that, please use chip and PIN or a mobile wallet.",
        "You can spend up to £100 in a single contactless payment; anything larger needs your PIN.",
        "Contactless payments are capped at £100 each, so a £120 purchase needs chip and PIN.",
        "Yes, each contactless payment can be up to £100. Larger amounts need chip and PIN.",
        "Not by tapping the card, since the contactless limit is £100 per transaction. Use chip and PIN for the £150 purchase instead.",
    ]),
    dict(key="atm_limit", category="Cards", questions=[
        "How much cash can I take out of an ATM each day?",
        "What is the daily withdrawal limit on the Classic Debit Card?",
        "Is the cash machine limit higher for Ledger Plus customers?",
        "What's the maximum ATM withdrawal per day?",
        "Can I withdraw £800 in one day?",
    ], answers=[
        "You can withdraw up to £500 a day with the Classic Debit Card, or £1,000 a day if you hold a Ledger Plus Account.",
        "The Classic Debit Card has a £500 daily ATM limit. Ledger Plus Account holders can take out up to £1,000 a day.",
        "Yes, Ledger Plus customers can withdraw £1,000 a day, compared with £500 a day on the standard Classic Debit Card.",
        "The daily cash limit is £500 on the Classic Debit Card and £1,000 for Ledger Plus Accounts.",
        "Only with a Ledger Plus Account, which allows £1,000 a day. The Classic Debit Card is limited to £500 per day.",
    ]),
    dict(key="debit_fx_fee", category="Cards", questions=[
        "What fees apply when I use my debit card abroad?",
        "Is there a charge for spending in euros on my Classic Debit Card?",
        "How much does it cost to take cash out of an ATM overseas?",
        "Does Northwind charge a foreign transaction fee on debit cards?",
        "I'm going to Spain. What will my debit card cost me there?",
    ], answers=[
        "The Classic Debit Card charges 2.99% on foreign currency transactions, plus £1.50 for each cash withdrawal abroad.",
        "Yes, 2.99% of each euro payment. Cash machine withdrawals abroad also cost £1.50 each.",
        "Overseas ATM withdrawals cost £1.50 each, on top of the 2.99% fee applied to every foreign currency transaction.",
        "Yes, the foreign transaction fee on our debit card is 2.99%, and withdrawing cash abroad adds £1.50 per withdrawal.",
        "In Spain each card payment costs 2.99% of the amount, and every ATM withdrawal costs an extra £1.50.",
    ]),
    dict(key="replacement_card", category="Cards", questions=[
        "I lost my debit card. What should I do?",
        "How long does a replacement card take to arrive?",
        "Do you charge for a replacement card?",
        "My card was stolen, how do I get a new one?",
        "How much is a second replacement card in the same year?",
    ], answers=[
        "Freeze the card straight away in the app, then order a replacement there. It arrives in 3 to 5 working days; the first replacement in 12 months is free, then £5.",
        "A replacement card arrives within 3-5 working days. Your first replacement in any 12 months is free; after that each one costs £5.",
        "The first replacement in a 12-month period is free; further replacements cost £5 each and arrive in 3-5 working days.",
        "Freeze the card in the app immediately and request a new one from the Cards menu. Delivery takes 3-5 working days and is free for the first replacement in 12 months.",
        "A second replacement within 12 months costs £5. Only the first one in that period is free, and delivery takes 3-5 working days.",
    ]),
    dict(key="dispute", category="Cards", questions=[
        "How do I dispute a card payment?",
        "What's the deadline to challenge a transaction?",
        "What does a DSP reference mean?",
        "A merchant didn't deliver my order. Can I get my money back?",
        "How long will my chargeback take?",
    ], answers=[
        "Raise a dispute in the app within 120 days of the transaction. You'll get a DSP- reference and an update within 10 working days.",
        "You must dispute a card transaction within 120 days. We confirm it with a DSP- reference number and update you within 10 working days.",
        "A DSP- reference, like DSP-20481173, identifies your card dispute. Quote it when you contact us; we update you within 10 working days.",
        "Possibly: open a dispute in the app within 120 days of the payment. We give you a DSP- reference and report back within 10 working days.",
        "We update you within 10 working days of opening the dispute, which must be within 120 days of the transaction; quote your DSP- reference.",
    ]),
    dict(key="emergency_cash", category="Cards", questions=[
        "I lost my card while travelling. Can I get emergency cash?",
        "Who can get emergency cash abroad?",
        "How much emergency cash can Onyx cardholders get?",
        "How fast is emergency cash delivered overseas?",
        "Is emergency cash available on the Gold card?",
    ], answers=[
        "If you hold an Onyx Card, we can arrange up to £500 of emergency cash abroad, usually within 24 hours.",
        "Emergency cash abroad is an Onyx Card benefit: up to £500, normally available within 24 hours.",
        "Onyx cardholders can receive up to £500 in emergency cash while overseas, delivered within 24 hours.",
        "It is normally ready to collect within 24 hours, up to £500, for Onyx Card customers.",
        "No, emergency cash abroad is only for Onyx Card holders, who can get up to £500 within 24 hours.",
    ]),
    dict(key="limit_increase", category="Cards", questions=[
        "How do I increase my credit limit?",
        "How often can I ask for a higher credit limit?",
        "Can I request a limit increase on a new card?",
        "Where do I apply for a credit limit increase?",
        "My limit increase was declined. When can I try again?",
    ], answers=[
        "Request a credit limit increase in the app once your card has been open for 6 months; you can ask once every 6 months.",
        "You can request a higher limit once every 6 months, through the app.",
        "Not straight away. Your card must be open for at least 6 months before you can request a limit increase.",
        "Apply in the app under Cards > Credit Limit, once the account is at least 6 months old.",
        "You can ask again 6 months after your last request. Requests are made in the app.",
    ]),
    dict(key="pay_card_external", category="Cards", questions=[
        "How do I pay my credit card from another bank?",
        "What are the payment details for my Northwind credit card?",
        "Which sort code do I use to pay off my Gold card?",
        "What reference should I use when paying my credit card?",
        "Can I pay my credit card by bank transfer?",
    ], answers=[
        "From another bank, send a transfer to sort code 40-71-99, account 30016642, and use your 16-digit card number as the reference.",
        "The payment details are sort code 40-71-99 and account number 30016642. Your 16-digit card number is the reference.",
        "Use sort code 40-71-99 (account 30016642), the same for every Northwind credit card including Gold; quote your 16-digit card number.",
        "The reference must be your full 16-digit card number, so the payment to account 30016642, sort code 40-71-99, reaches your card.",
        "Yes, by bank transfer to account 30016642 at sort code 40-71-99, with your 16-digit card number as reference.",
    ]),
    # --- accounts ------------------------------------------------------------------------
    dict(key="everyday_fee", category="Accounts", questions=[
        "Is there a monthly fee on the Everyday Current Account?",
        "How much does the Everyday Current Account cost to run?",
        "Do I need to pay in a minimum amount to open an Everyday account?",
        "Is the Everyday Current Account free?",
        "What fees come with the basic Everyday account?",
    ], answers=[
        "No, the Everyday Current Account has a £0 monthly fee and there is no minimum deposit to open it.",
        "It costs nothing to run: there is no monthly fee and no minimum amount to pay in when you open it.",
        "No minimum deposit is needed, and the Everyday Current Account has no monthly fee at all.",
        "Yes, the Everyday Current Account is free, with no monthly account fee and no minimum opening deposit.",
        "There is no monthly fee on the Everyday account and no minimum deposit, but overdraft interest applies if you borrow.",
    ]),
    dict(key="ledger_plus", category="Accounts", questions=[
        "How much is the Ledger Plus Account each month?",
        "What's included in Ledger Plus?",
        "Does Ledger Plus come with travel insurance?",
        "Is there an excess on the phone insurance in Ledger Plus?",
        "Why should I upgrade to the Ledger Plus Account?",
    ], answers=[
        "The Ledger Plus Account costs £12 a month and includes worldwide travel insurance up to age 79 plus mobile phone insurance with a £75 excess.",
        "For £12 per month, Ledger Plus gives you worldwide travel insurance for customers aged up to 79 and phone insurance with a £75 excess.",
        "Yes, worldwide travel cover for customers up to age 79 is part of the £12 monthly fee, along with mobile phone insurance.",
        "Yes, phone insurance claims under Ledger Plus have a £75 excess. The account costs £12 monthly and also includes worldwide travel cover up to age 79.",
        "For £12 a month you get worldwide travel insurance (up to age 79), mobile phone insurance with a £75 excess and a £1,000 daily ATM limit.",
    ]),
    dict(key="overdraft", category="Accounts", questions=[
        "What is the overdraft interest rate?",
        "Do you have an interest-free overdraft buffer?",
        "How much does it cost to go overdrawn on my current account?",
        "What happens if I spend more than my arranged overdraft?",
        "Is the first part of my overdraft free?",
    ], answers=[
        "Arranged overdrafts cost 29.9% EAR variable, and the first £50 is interest-free. Payments that would go past your limit are declined.",
        "Yes, the first £50 of any arranged overdraft is interest-free; after that we charge 29.9% EAR variable.",
        "Borrowing on an arranged overdraft costs 29.9% EAR variable, with no interest on the first £50.",
        "Payments beyond your arranged overdraft limit are declined, so there is no unarranged overdraft. Arranged borrowing costs 29.9% EAR after a £50 interest-free buffer.",
        "Yes, there is a £50 interest-free buffer. Above £50, the arranged overdraft rate is 29.9% EAR variable.",
    ]),
    dict(key="student_account", category="Accounts", questions=[
        "What overdraft does the Student Ledger Account give?",
        "Who can open a Student Ledger Account?",
        "Is the student overdraft really interest-free?",
        "I'm starting university in September. What does your student account offer?",
        "How much can students borrow interest-free?",
    ], answers=[
        "The Student Ledger Account offers an interest-free arranged overdraft of up to £2,000 for full-time students aged 17 or over.",
        "Full-time students aged 17 or older can open it, and it comes with an interest-free overdraft of up to £2,000.",
        "Yes, there is no interest on the Student Ledger Account overdraft up to £2,000, for full-time students aged 17 and over.",
        "As a full-time student aged 17+, you can open a Student Ledger Account with a £2,000 interest-free overdraft and no monthly fee.",
        "Students can borrow up to £2,000 without interest through the Student Ledger Account overdraft; you must be in full-time study and 17 or older.",
    ]),
    dict(key="open_account", category="Accounts", questions=[
        "What do I need to open a current account?",
        "How long does it take to open an account in the app?",
        "Which documents are required to become a Northwind customer?",
        "Is there an age limit for opening an Everyday Current Account?",
        "Can I open an account online?",
    ], answers=[
        "You must be 18 or over and provide photo ID and proof of address dated within the last 3 months. Opening in the app takes about 10 minutes.",
        "About 10 minutes. Have your photo ID and a proof of address from the last 3 months ready; you must be 18 or older.",
        "We need photo ID and a proof of address dated within 3 months, and you must be at least 18. The app application takes around 10 minutes.",
        "Yes, you need to be 18 or over. You'll also need photo ID and proof of address no older than 3 months; the app process takes about 10 minutes.",
        "Yes, through the Northwind app in about 10 minutes, if you are 18+ and have photo ID plus proof of address dated within the last 3 months.",
    ]),
    dict(key="card_delivery", category="Accounts", questions=[
        "When will my new debit card arrive?",
        "How is my PIN sent to me?",
        "I opened my account yesterday. How long until the Classic Debit Card comes?",
        "Does the PIN come with the card?",
        "How many days does a new card take to be delivered?",
    ], answers=[
        "Your Classic Debit Card arrives within 5 working days of opening the account, and the PIN follows in a separate letter about 2 days later.",
        "Your PIN is posted separately, arriving around 2 days after the card, which itself takes up to 5 working days.",
        "Expect the Classic Debit Card within 5 working days; the PIN is sent in its own letter roughly 2 days after that.",
        "No, for security the PIN is mailed on its own about 2 days after the card. The card takes up to 5 working days.",
        "New debit cards are delivered within 5 working days, with the PIN arriving separately about 2 days later.",
    ]),
    dict(key="close_account", category="Accounts", questions=[
        "How do I close my account?",
        "What form do I use to close a Northwind account?",
        "When will I receive my money after closing my account?",
        "Can I close my current account in the app?",
        "I want to shut my Everyday account. What's the process?",
    ], answers=[
        "You can close it in the app under Settings or by sending Form NL-7. Any remaining balance is transferred to you within 5 working days.",
        "Use Form NL-7, or close the account in the app. We move any balance left in it to your nominated account within 5 working days.",
        "The remaining balance is paid to your nominated account within 5 working days after you close via the app or Form NL-7.",
        "Yes, go to Settings in the app and choose Close Account, or send Form NL-7. Any balance is sent out within 5 working days.",
        "Close it through the app or return Form NL-7 to any branch; your remaining money is transferred within 5 working days.",
    ]),
    dict(key="switch_time", category="Accounts", questions=[
        "How long does it take to switch my current account to Northwind?",
        "Can I move my bank account over to you?",
        "Will my Direct Debits move automatically when I switch?",
        "How many days does a full account switch take?",
        "What is the switching process?",
    ], answers=[
        "A full switch through the Current Account Switch Service takes 7 working days, and your Direct Debits and standing orders move automatically.",
        "Yes, we use the Current Account Switch Service; the switch completes in 7 working days, including moving your payments.",
        "Yes, Direct Debits and standing orders transfer automatically as part of the 7-working-day Current Account Switch Service.",
        "It takes 7 working days. You pick a switch date and the Current Account Switch Service moves your balance and payments.",
        "Apply in the app and choose a switch date; the Current Account Switch Service completes everything in 7 working days.",
    ]),
    dict(key="switch_reward", category="Accounts", questions=[
        "Is there a bonus for switching to Northwind?",
        "How do I qualify for the switching reward?",
        "When is the £150 switch reward paid?",
        "What are the conditions of the switch incentive?",
        "Do you pay people to move their current account?",
    ], answers=[
        "Yes, we pay £150 when you switch using the Current Account Switch Service and move at least two Direct Debits within 60 days.",
        "Move at least 2 Direct Debits to your new account within 60 days of a full switch, and we'll pay the £150 reward.",
        "The £150 reward is paid within 28 days after you meet the conditions: a full switch and two Direct Debits moved within 60 days.",
        "You need to complete a full switch and have at least two Direct Debits on the account within 60 days; the £150 is paid within 28 days after that.",
        "Yes, a £150 switch reward, paid within 28 days once you have switched fully and moved two Direct Debits within 60 days.",
    ]),
    dict(key="statements", category="Accounts", questions=[
        "How far back can I see statements in the app?",
        "Can I get a paper copy of an old statement?",
        "Is there a charge for printed statements?",
        "Where do I download my statements?",
        "How many years of statements do you keep online?",
    ], answers=[
        "The app holds 7 years of statements you can download free. Paper copies of past statements cost £5 each.",
        "Yes, we can post a paper copy for £5 per statement. The last 7 years are also free to download in the app.",
        "Printed copies of statements are £5 each; downloading any of the last 7 years from the app is free.",
        "Download them from the Statements tab in the app, which keeps 7 years of history. Paper copies cost £5 each.",
        "We keep 7 years online: every statement from that period is in the app, and a paper copy costs £5.",
    ]),
    dict(key="inactive_account", category="Accounts", questions=[
        "When does an account become inactive?",
        "My old savings account is dormant. How do I reactivate it?",
        "Why was my account marked inactive?",
        "What counts as an inactive account at Northwind?",
        "Can I still use an account I haven't touched in years?",
    ], answers=[
        "An account becomes inactive after 24 months with no transactions made by you. Reactivate it by visiting a branch with photo ID.",
        "Bring photo ID to any branch and we can reactivate it. Accounts go inactive after 24 months without any customer-made transactions.",
        "Accounts are marked inactive when you have made no transactions for 24 months. A branch visit with photo ID reactivates it.",
        "Any account with no customer-initiated transactions for 24 months is classed as inactive until you show photo ID in a branch.",
        "Yes, once it is reactivated: after 24 months without your own transactions it becomes inactive, and you reactivate it in branch with photo ID.",
    ]),
    # --- savings -------------------------------------------------------------------------
    dict(key="harbour_saver", category="Savings", questions=[
        "What rate does the Harbour Saver pay?",
        "Can I withdraw from the Harbour Saver whenever I want?",
        "How often is interest paid on Harbour Saver?",
        "What's the interest on your easy access savings account?",
        "Is there a limit on Harbour Saver withdrawals?",
    ], answers=[
        "The Harbour Saver pays 3.10% AER variable, with unlimited withdrawals and interest paid monthly on the 1st.",
        "Yes, Harbour Saver allows unlimited withdrawals. It pays 3.10% AER variable, credited on the 1st of each month.",
        "Interest is paid monthly, on the 1st of each month, at 3.10% AER variable.",
        "Our easy access Harbour Saver earns 3.10% AER variable and lets you take money out at any time.",
        "No, you can make unlimited withdrawals. The account pays 3.10% AER variable, with interest added on the 1st of each month.",
    ]),
    dict(key="lighthouse_bond", category="Savings", questions=[
        "What is the rate on the Lighthouse 1-Year Fixed Bond?",
        "How much do I need to open a Lighthouse Bond?",
        "Can I take money out of my fixed bond early?",
        "What's the maximum deposit for the one-year bond?",
        "How long do I have to fund a Lighthouse Bond?",
    ], answers=[
        "The Lighthouse 1-Year Fixed Bond pays 4.45% AER fixed on deposits from £1,000 to £250,000.",
        "You need at least £1,000 to open a Lighthouse Bond, and you can deposit up to £250,000 at 4.45% AER fixed.",
        "No, the Lighthouse Bond does not allow withdrawals until it matures after 1 year. It pays 4.45% AER fixed.",
        "The one-year Lighthouse Bond accepts up to £250,000, with a minimum of £1,000, at 4.45% AER.",
        "You have 14 days after opening to fund the Lighthouse Bond with £1,000 to £250,000; it then earns 4.45% AER fixed for 1 year.",
    ]),
    dict(key="anchor_regular_saver", category="Savings", questions=[
        "What does the Anchor Regular Saver pay?",
        "How much can I pay into the Anchor Regular Saver each month?",
        "What happens when my regular saver ends?",
        "Is 5.25% on the regular saver fixed?",
        "What are the monthly deposit limits on your regular saving account?",
    ], answers=[
        "The Anchor Regular Saver pays 5.25% AER fixed for 12 months on monthly deposits of £25 to £300.",
        "You can pay in between £25 and £300 a month. The rate is 5.25% AER fixed for the 12-month term.",
        "After 12 months the Anchor Regular Saver matures and the balance moves to a Harbour Saver. Until then it earns 5.25% AER fixed.",
        "Yes, 5.25% AER is fixed for the full 12-month term of the Anchor Regular Saver, on £25-£300 saved each month.",
        "Each month you can deposit at least £25 and at most £300 into the Anchor Regular Saver, earning 5.25% AER fixed.",
    ]),
    dict(key="cash_isa", category="Savings", questions=[
        "What's the rate on the Northwind Cash ISA?",
        "How much can I put into a Cash ISA this tax year?",
        "How many withdrawals can I make from the Cash ISA?",
        "Is the interest on your ISA tax-free?",
        "Tell me about the Cash ISA.",
    ], answers=[
        "The Northwind Cash ISA pays 3.60% AER variable, tax-free, on up to the £20,000 annual ISA allowance.",
        "You can save up to £20,000 per tax year in the Cash ISA, earning 3.60% AER variable tax-free.",
        "You can make 3 penalty-free withdrawals a year from the Cash ISA, which pays 3.60% AER variable.",
        "Yes, Cash ISA interest of 3.60% AER variable is tax-free, within the £20,000 yearly allowance.",
        "It pays 3.60% AER variable, accepts up to £20,000 a tax year and allows 3 penalty-free withdrawals a year, all free of tax.",
    ]),
    dict(key="isa_transfer", category="Savings", questions=[
        "How do I transfer an ISA from another bank?",
        "How long does an ISA transfer into Northwind take?",
        "Which form is needed to move my ISA to you?",
        "Can I move my existing Cash ISA without losing the tax-free status?",
        "When will my transferred ISA money arrive?",
    ], answers=[
        "Request the transfer in the app or send Form NL-31, the ISA Transfer Form. Transfers in take up to 15 working days.",
        "ISA transfers in take up to 15 working days from when we receive Form NL-31 or your app request.",
        "Use Form NL-31 (ISA Transfer Form), or apply in the app. The transfer is completed within 15 working days.",
        "Yes, transfer it using Form NL-31 or the app rather than withdrawing it, and the tax-free status is kept. It takes up to 15 working days.",
        "Transferred ISA funds arrive within 15 working days of your Form NL-31 or in-app request.",
    ]),
    dict(key="junior_saver", category="Savings", questions=[
        "Do you have a savings account for children?",
        "What interest does the Junior Saver pay?",
        "What ages can have a Junior Saver account?",
        "Is there a maximum balance on the Junior Saver?",
        "My daughter is 9. Can she have a savings account with you?",
    ], answers=[
        "Yes, our Junior Saver is open to anyone aged 7 to 17 and earns 4.00% AER variable on balances of up to £5,000.",
        "It pays 4.00% AER variable. That rate applies to the first £5,000 saved by a child aged 7-17.",
        "Junior Saver accounts are for children aged 7 to 17, earning 4.00% AER variable on up to £5,000.",
        "Interest at 4.00% AER variable is paid on balances up to £5,000; anything above that earns no interest.",
        "Yes, at 9 she qualifies: the Junior Saver accepts children aged 7 to 17 and pays 4.00% AER variable on up to £5,000.",
    ]),
    # --- mobile app ----------------------------------------------------------------------
    dict(key="card_freeze", category="Mobile app", questions=[
        "How do I temporarily block my card?",
        "What does freezing my card in the app actually stop?",
        "Will my Direct Debits still go out if I freeze my card?",
        "Is there a way to pause my card without cancelling it?",
        "Where is the card freeze option?",
    ], answers=[
        "Use the Card Freeze toggle in the Northwind app under Cards. It takes effect instantly and blocks card payments and ATM withdrawals.",
        "Freezing blocks all card payments and cash withdrawals straight away, but Direct Debits and standing orders keep going out as normal.",
        "Yes. Card Freeze only stops card payments and ATM withdrawals; Direct Debits and standing orders carry on.",
        "Yes, switch on Card Freeze in the app. It stops card payments and cash withdrawals instantly, and you can unfreeze at any time.",
        "It's in the Northwind app: open Cards and tap the Card Freeze toggle. It works instantly and you can switch it back off whenever you like.",
    ]),
    dict(key="virtual_card", category="Mobile app", questions=[
        "Can I use my card before the plastic one arrives?",
        "What is the Northwind Virtual Card?",
        "How soon can I shop online after opening an account?",
        "Do I get card details in the app straight away?",
        "Where do I find my virtual card number?",
    ], answers=[
        "Yes, the Northwind Virtual Card appears in the app as soon as your account is opened, so you can pay online or with a mobile wallet straight away.",
        "It's a digital version of your debit card that is available instantly in the app after your account opens, for online and mobile wallet payments.",
        "Right away: your Northwind Virtual Card is ready in the app the moment the account is opened, before the physical card arrives.",
        "Yes. The Northwind Virtual Card is shown in the app immediately after account opening, with its card number, expiry date and security code.",
        "Open the Cards section of the app and select Northwind Virtual Card; its number is available instantly once your account is opened.",
    ]),
    dict(key="pocket_vaults", category="Mobile app", questions=[
        "What are Pocket Vaults?",
        "How many Pocket Vaults can I create?",
        "Do Pocket Vaults earn interest?",
        "Can I set savings goals in the Northwind app?",
        "Is there a limit to the number of vaults in the app?",
    ], answers=[
        "Pocket Vaults are savings pots in the Northwind app. You can have up to 10, each with its own goal, and they earn 2.50% AER variable.",
        "You can create up to 10 Pocket Vaults, each with a separate goal, earning 2.50% AER variable.",
        "Yes, money held in any of your Pocket Vaults earns 2.50% AER variable, and you can have up to 10 of them.",
        "Yes, set a goal on each of up to 10 Pocket Vaults in the app; balances earn 2.50% AER variable.",
        "The limit is 10 Pocket Vaults per customer. Each can have its own target and earns 2.50% AER variable.",
    ]),
    dict(key="round_up_jar", category="Mobile app", questions=[
        "How does the Round-Up Jar work?",
        "When is my spare change moved into savings?",
        "Where does the Round-Up Jar send my money?",
        "Can I round up my card purchases to save automatically?",
        "What is the Round-Up boost?",
    ], answers=[
        "The Round-Up Jar rounds each card purchase up to the next £1 and moves the spare change into your Harbour Saver every night at 11pm.",
        "Round-ups are swept into your Harbour Saver each night at 11pm, after each card payment is rounded up to the next pound.",
        "The spare change goes to your Harbour Saver. Transfers happen nightly at 11pm, and you can turn on a 2x boost to double it.",
        "Yes, switch on the Round-Up Jar in the app and every card purchase is rounded to the next £1, with the difference saved at 11pm each night.",
        "The 2x boost doubles each round-up, so a £2.40 coffee saves £1.20 instead of 60p. Round-ups move to your Harbour Saver nightly at 11pm.",
    ]),
    dict(key="ledger_lens", category="Mobile app", questions=[
        "What is Ledger Lens?",
        "When is my monthly spending report available?",
        "How does the app categorise my spending?",
        "Can the app show where my money goes?",
        "How many spending categories does Ledger Lens use?",
    ], answers=[
        "Ledger Lens is the spending insights feature in the app. It sorts transactions into 12 categories and publishes a monthly report on the 3rd.",
        "Your Ledger Lens monthly spending report is ready on the 3rd of each month, covering 12 spending categories.",
        "Ledger Lens automatically places each transaction into one of 12 categories and sends a monthly summary on the 3rd.",
        "Yes, Ledger Lens in the app breaks your spending into 12 categories, with a monthly report on the 3rd.",
        "It uses 12 categories, and your monthly spending report arrives on the 3rd of each month.",
    ]),
    dict(key="app_requirements", category="Mobile app", questions=[
        "Which phones support the Northwind app?",
        "Will the app work on Android 9?",
        "How many devices can I use the app on?",
        "What iOS version do I need?",
        "Can I use the app on my phone and my tablet?",
    ], answers=[
        "The Northwind app needs iOS 16 or later or Android 10 or later, and you can register up to 2 devices.",
        "No, the app requires Android 10 or later (or iOS 16 or later on Apple devices).",
        "You can register the app on up to 2 devices, running iOS 16+ or Android 10+.",
        "You need iOS 16 or later; on Android, version 10 or later is required.",
        "Yes, you can register up to 2 devices, as long as they run iOS 16+ or Android 10+.",
    ]),
    # --- security ------------------------------------------------------------------------
    dict(key="ledger_key", category="Security", questions=[
        "What is a Ledger Key code?",
        "How long is my Ledger Key valid for?",
        "Someone called and asked for my Ledger Key. Is that normal?",
        "How many digits is the one-time passcode?",
        "My Ledger Key code expired. Why?",
    ], answers=[
        "Ledger Key is the 6-digit one-time code we send to approve logins and payments. Each code expires after 5 minutes.",
        "Each Ledger Key is valid for 5 minutes. It's a 6-digit code, and we will never ask you to read it out.",
        "No. Northwind staff never ask for your Ledger Key; hang up and report it in the app. The 6-digit code expires after 5 minutes.",
        "Ledger Key one-time codes have 6 digits and stop working after 5 minutes.",
        "Ledger Key codes expire 5 minutes after they are sent, so request a new 6-digit code and enter it straight away.",
    ]),
    dict(key="login_lockout", category="Security", questions=[
        "I entered my passcode wrong several times and I'm locked out.",
        "How many login attempts do I get in the app?",
        "How long is the app lock after failed logins?",
        "Why can't I log in to the Northwind app?",
        "What happens after 5 wrong passcodes?",
    ], answers=[
        "After 5 incorrect passcode attempts the app locks for 30 minutes. Wait it out, or reset your passcode with a selfie ID check.",
        "You get 5 attempts. After the fifth wrong passcode, access is locked for 30 minutes.",
        "The lock lasts 30 minutes and starts after 5 failed passcode attempts. You can also reset your passcode in the app with a selfie ID check.",
        "If you have entered a wrong passcode 5 times, the app is locked for 30 minutes. Try again after that or reset via the selfie ID check.",
        "The app locks you out for 30 minutes. You can reset your passcode sooner using the selfie ID check.",
    ]),
    dict(key="scam_report", category="Security", questions=[
        "How do I report a scam to Northwind?",
        "Someone says I need to move money to a safe account. Is that you?",
        "How long does a fraud claim take?",
        "I think I've been scammed. What should I do?",
        "Will you refund me if I was tricked into a payment?",
    ], answers=[
        "Tap Report Scam in the app under Help. We aim to give a decision on fraud claims within 15 working days.",
        "No. Northwind will never ask you to move money to a safe account. Stop contact and use Report Scam in the app.",
        "We give a decision on fraud and scam claims within 15 working days of you reporting them via Report Scam.",
        "Use the Report Scam button in the app straight away and freeze your card. We decide scam claims within 15 working days.",
        "Report it with the Report Scam button in the app. We assess every claim and give you a refund decision within 15 working days.",
    ]),
    # --- payments ------------------------------------------------------------------------
    dict(key="faster_payments", category="Payments", questions=[
        "What is the maximum amount I can send in the app?",
        "Is there a daily limit on online transfers?",
        "Can I send £22,000 in one payment?",
        "What are the Faster Payments limits?",
        "How much can I transfer per day?",
    ], answers=[
        "In the app, a single Faster Payment can be up to £20,000, with a daily total of £25,000.",
        "Yes, you can send up to £25,000 a day in total, and no single payment can exceed £20,000.",
        "No, one payment can be at most £20,000. You could send £20,000 and £2,000 separately, within the £25,000 daily limit.",
        "Faster Payments are limited to £20,000 per payment and £25,000 per day.",
        "Up to £25,000 a day, with each individual transfer capped at £20,000.",
    ]),
    dict(key="new_payee_hold", category="Payments", questions=[
        "Why is my payment to a new payee pending?",
        "Do you hold payments to new payees?",
        "How long can a first payment be delayed?",
        "I paid a new contact £1,500 and it hasn't arrived. Why?",
        "Is there a limit for new payees?",
    ], answers=[
        "First payments over £1,000 to a new payee can be held for a security check of up to 4 hours.",
        "Yes, if the first payment to a new payee is more than £1,000, we may hold it for up to 4 hours to check it.",
        "A first payment above £1,000 to someone you have not paid before can be delayed up to 4 hours.",
        "Because it's over £1,000 and the first to a new payee, it may be held up to 4 hours for a security check.",
        "There's no separate limit, but first payments of more than £1,000 to new payees may be held up to 4 hours for checks.",
    ]),
    dict(key="chaps", category="Payments", questions=[
        "How do I make a CHAPS payment?",
        "What does a CHAPS transfer cost?",
        "What's the CHAPS cut-off time?",
        "Can I send a CHAPS payment in the app?",
        "I need to send money for my house completion today. How?",
    ], answers=[
        "CHAPS payments can be made in branch or by phone, cost £25, and arrive the same day if requested before 15:30.",
        "A CHAPS payment costs £25. Requests made before 15:30 on a working day arrive the same day.",
        "The CHAPS cut-off is 15:30 on working days; the fee is £25 per payment.",
        "No, CHAPS is only available in branch or by phone, for £25. Same-day payment needs the request before 15:30.",
        "Use CHAPS, in branch or by phone, before 15:30 for same-day payment; it costs £25.",
    ]),
    dict(key="swift", category="Payments", questions=[
        "How much does an international transfer cost?",
        "What's the cut-off for sending money abroad?",
        "How long does a SWIFT payment take?",
        "I want to send money to Canada. What are the charges?",
        "When do international payments need to be sent by?",
    ], answers=[
        "International SWIFT payments cost £15 each. Send before 14:00 UK time and they arrive in 1 to 4 working days.",
        "The cut-off for international payments is 14:00 UK time on a working day. SWIFT transfers cost £15 and take 1-4 working days.",
        "A SWIFT payment takes 1 to 4 working days to arrive, if sent before the 14:00 cut-off. The fee is £15.",
        "A payment to Canada goes by SWIFT for a £15 fee and takes 1-4 working days, if sent before 14:00.",
        "International payments must be sent before 14:00 UK time; they cost £15 and arrive within 1-4 working days.",
    ]),
    dict(key="sepa", category="Payments", questions=[
        "How much is a SEPA payment?",
        "How long does it take to send euros to a European bank?",
        "Is it cheaper to send euros than other currencies?",
        "What's the cheapest way to pay a French bank account?",
        "What is the cut-off for euro transfers?",
    ], answers=[
        "SEPA payments in euros cost £2 and arrive the next working day if sent before 16:00.",
        "Euro payments within SEPA arrive the next working day when sent before 16:00, for a £2 fee.",
        "Yes, a SEPA euro payment costs £2 compared with £15 for SWIFT, and arrives the next working day.",
        "Send it in euros by SEPA: the fee is £2, and it arrives the next working day if sent by 16:00.",
        "The cut-off for SEPA euro payments is 16:00; they then arrive the next working day for a £2 fee.",
    ]),
    dict(key="bank_details", category="Payments", questions=[
        "What is Northwind Ledger Bank's sort code?",
        "What's your BIC or SWIFT code?",
        "What details do I give to receive money from abroad?",
        "Where can I find my IBAN?",
        "What bank codes do I need for an incoming international payment?",
    ], answers=[
        "Our sort code is 40-71-88. For international payments use BIC NWLBGB2K; your IBAN is shown in the app.",
        "The BIC (SWIFT code) is NWLBGB2K. Our sort code is 40-71-88.",
        "Give the sender your IBAN from the app and our BIC, NWLBGB2K. UK payers just need sort code 40-71-88 and your account number.",
        "Your IBAN is in the app under Account Details. You'll also need our BIC, NWLBGB2K.",
        "Incoming international payments need your IBAN (in the app) and BIC NWLBGB2K; domestic ones need sort code 40-71-88.",
    ]),
    dict(key="standing_orders", category="Payments", questions=[
        "When do I need to set up a standing order by?",
        "Can I change a standing order due tomorrow?",
        "What's the deadline for amending a standing order?",
        "How do I create a regular payment?",
        "If I set up a standing order tonight, will it go out tomorrow?",
    ], answers=[
        "Set up or change a standing order by 22:00 on the working day before it is due.",
        "Yes, if you make the change before 22:00 today, as long as today is a working day.",
        "Standing orders can be amended until 22:00 on the working day before the payment date.",
        "Create a standing order in the app under Payments; it must be set up by 22:00 the working day before the first payment.",
        "Yes, if you set it up before 22:00 on a working day. After 22:00, the first payment moves to the following working day.",
    ]),
    dict(key="direct_debit_cancel", category="Payments", questions=[
        "How do I cancel a Direct Debit?",
        "What's the latest time to stop a Direct Debit?",
        "Can I cancel a Direct Debit on the day it's taken?",
        "Is there a cut-off for cancelling Direct Debits?",
        "I want to stop my gym Direct Debit. When do I need to do it?",
    ], answers=[
        "Cancel it in the app under Payments > Direct Debits by 17:00 on the working day before it is due.",
        "The cut-off to cancel a Direct Debit is 17:00 on the working day before the collection date.",
        "No, it must be cancelled by 17:00 on the working day before the payment is due.",
        "Yes, you must cancel by 17:00 on the working day before collection, via the app or phone.",
        "Cancel it in the app before 17:00 on the working day before the gym's next collection.",
    ]),
    dict(key="mobile_cheque", category="Payments", questions=[
        "Can I pay in a cheque using my phone?",
        "What is the maximum cheque I can deposit in the app?",
        "When will money from a cheque be available?",
        "Is there a daily limit for mobile cheque deposits?",
        "I have a £3,000 cheque. Can I scan it in the app?",
    ], answers=[
        "Yes, you can pay in cheques in the app up to £2,500 each and £5,000 per day. Funds are available by 23:59 the next working day.",
        "Each cheque deposited in the app can be up to £2,500, with a daily limit of £5,000.",
        "Cheque funds are available by 23:59 on the next working day after you pay it in.",
        "Yes, mobile cheque deposits are limited to £5,000 per day, and £2,500 per cheque.",
        "No, app deposits are limited to £2,500 per cheque, so pay the £3,000 cheque in at a branch instead.",
    ]),
    dict(key="cheque_book", category="Payments", questions=[
        "How do I order a cheque book?",
        "Is there a charge for a new cheque book?",
        "How many cheques are in a book?",
        "How long will my cheque book take to arrive?",
        "Can I still get cheques from Northwind?",
    ], answers=[
        "Order a cheque book in the app under Account Services. It's free, contains 30 cheques and arrives within 7 working days.",
        "No, cheque books are free. Each has 30 cheques and is delivered within 7 working days.",
        "Each cheque book contains 30 cheques. They're free and arrive within 7 working days.",
        "Your cheque book should arrive within 7 working days of ordering. It's free and holds 30 cheques.",
        "Yes, you can order a free cheque book of 30 cheques in the app, delivered within 7 working days.",
    ]),
    dict(key="post_office_deposit", category="Payments", questions=[
        "Can I pay cash into my account at the Post Office?",
        "How much cash can I deposit at the Post Office?",
        "When is cash paid in at the Post Office credited?",
        "There's no branch near me. Where can I deposit cash?",
        "Is there a daily limit for Post Office deposits?",
    ], answers=[
        "Yes, you can pay in up to £2,000 cash a day at any Post Office using your debit card. It's credited the same working day.",
        "You can deposit up to £2,000 in cash per day at the Post Office, and it reaches your account that working day.",
        "Cash deposited at a Post Office is credited the same working day, up to £2,000 a day.",
        "Use any Post Office with your debit card: you can pay in up to £2,000 a day, credited the same working day.",
        "Yes, Post Office cash deposits are limited to £2,000 per day and credited the same working day.",
    ]),
    dict(key="travel_money", category="Payments", questions=[
        "Can I order foreign currency from Northwind?",
        "Is there commission on travel money?",
        "How much travel money can I order?",
        "When can I collect my currency order?",
        "Where do I pick up euros I ordered?",
    ], answers=[
        "Yes, order travel money in the app with 0% commission, up to £2,500, and collect it from a branch after 2 working days.",
        "No, travel money orders are 0% commission. You can order up to £2,500 and collect it in branch 2 working days later.",
        "You can order up to £2,500 of foreign currency per order, commission-free, ready to collect after 2 working days.",
        "Currency orders can be collected from your chosen branch 2 working days after ordering; up to £2,500 with 0% commission.",
        "Collect them at the branch you chose in the app, 2 working days after ordering. Orders are 0% commission, up to £2,500.",
    ]),
    # --- loans ---------------------------------------------------------------------------
    dict(key="personal_loan", category="Loans", questions=[
        "How much can I borrow with a personal loan?",
        "What is the representative APR on Northwind personal loans?",
        "How long can I take to repay a personal loan?",
        "What's the loan rate for borrowing £10,000?",
        "Tell me about your personal loans.",
    ], answers=[
        "Northwind Personal Loans range from £1,000 to £35,000 over 1 to 7 years, with a representative APR of 6.9% on £7,500-£25,000.",
        "The representative APR is 6.9% for loans of £7,500 to £25,000. You can borrow £1,000-£35,000 over 1-7 years.",
        "Terms run from 1 to 7 years, for amounts between £1,000 and £35,000; the representative APR is 6.9% for £7,500-£25,000.",
        "£10,000 falls in the £7,500-£25,000 band, which has a representative APR of 6.9%, repayable over 1 to 7 years.",
        "You can borrow from £1,000 up to £35,000, repaid over 1-7 years. Loans of £7,500-£25,000 have a 6.9% representative APR.",
    ]),
    dict(key="loan_funds", category="Loans", questions=[
        "How quickly will I get the loan money?",
        "If my loan is approved tonight, when will the funds arrive?",
        "Can I get a personal loan paid out the same day?",
        "What's the cut-off for same-day loan payouts?",
        "I was approved at 21:30. When is the money paid?",
    ], answers=[
        "If your loan is approved before 20:00, the money is paid into your account the same day; later approvals are paid the next working day.",
        "Loans approved before 20:00 pay out the same day. If approval comes after 20:00, you get the money the next working day.",
        "Yes, as long as it is approved before 20:00, the loan is paid out the same day.",
        "The cut-off is 20:00. Approvals before then are paid the same day; after 20:00 they are paid the next working day.",
        "Because it was approved after 20:00, it will be paid the next working day. Same-day payout needs approval before 20:00.",
    ]),
    dict(key="loan_early_repayment", category="Loans", questions=[
        "Can I pay off my loan early?",
        "Is there an early repayment charge on personal loans?",
        "How much does it cost to settle my loan early?",
        "Will I be penalised for clearing my loan ahead of schedule?",
        "How do I get a settlement figure for my loan?",
    ], answers=[
        "Yes, you can repay your loan early at any time. The early repayment charge is at most 58 days' interest.",
        "Yes, settling early costs up to 58 days' interest on the amount repaid.",
        "The early settlement charge is no more than 58 days' interest. Request a settlement figure in the app.",
        "Only a small charge: at most 58 days' interest, whenever you choose to clear it early.",
        "Request it in the app under Loans > Settle. The figure includes an early repayment charge of up to 58 days' interest.",
    ]),
    dict(key="driveline_loan", category="Loans", questions=[
        "Do you offer car finance?",
        "How much can I borrow with the DriveLine Car Loan?",
        "What is the APR on a DriveLine loan?",
        "Can I use a DriveLine loan for a 10-year-old car?",
        "What's the maximum term for a car loan?",
    ], answers=[
        "Yes, the DriveLine Car Loan lends up to £50,000 over up to 5 years at 7.4% APR representative, for cars under 8 years old.",
        "DriveLine lends up to £50,000, repayable over a maximum of 5 years, at 7.4% APR representative.",
        "DriveLine Car Loans have a representative APR of 7.4%, for up to £50,000 over up to 5 years.",
        "No, the car must be under 8 years old for a DriveLine Car Loan, which offers up to £50,000 at 7.4% APR.",
        "The longest DriveLine term is 5 years, for up to £50,000 at 7.4% APR representative on cars less than 8 years old.",
    ]),
    # --- mortgages -----------------------------------------------------------------------
    dict(key="keystone_mortgage", category="Mortgages", questions=[
        "What's the rate on the Keystone 5-year fixed mortgage?",
        "Is there an arrangement fee on Keystone mortgages?",
        "What is the maximum loan-to-value you lend at?",
        "Can I get a mortgage with a 10% deposit?",
        "Tell me about the Keystone mortgage.",
    ], answers=[
        "The Keystone 5-Year Fixed mortgage is 4.29%, with a £999 product fee, available up to 90% loan-to-value.",
        "Yes, the Keystone product fee is £999. The 5-year fixed rate is 4.29% at up to 90% LTV.",
        "We lend up to 90% loan-to-value on the Keystone 5-Year Fixed at 4.29%, with a £999 fee.",
        "Yes, a 10% deposit is enough, since Keystone lends up to 90% LTV; the 5-year fix is 4.29% with a £999 fee.",
        "Keystone is our 5-Year Fixed mortgage at 4.29%, up to 90% LTV, with a £999 product fee.",
    ]),
    dict(key="mortgage_overpayment", category="Mortgages", questions=[
        "Can I overpay my mortgage?",
        "How much can I overpay each year without a charge?",
        "What's the early repayment charge on the Keystone mortgage?",
        "If I pay off a lump sum, will I be charged?",
        "Is there a penalty for mortgage overpayments?",
    ], answers=[
        "Yes, you can overpay up to 10% of your mortgage balance each year with no charge. Above that, a 3% early repayment charge applies.",
        "Up to 10% of the outstanding balance per year can be overpaid free; anything above 10% is charged at 3%.",
        "Keystone has a 3% early repayment charge on overpayments beyond 10% of the balance in a year.",
        "Only if it's more than 10% of your balance in a year; the excess carries a 3% early repayment charge.",
        "Not within 10% of the balance a year. Overpayments over that limit attract a 3% early repayment charge.",
    ]),
    dict(key="agreement_in_principle", category="Mortgages", questions=[
        "How long is a mortgage Agreement in Principle valid?",
        "Does an Agreement in Principle affect my credit score?",
        "How do I get an Agreement in Principle?",
        "Can I renew an expired Agreement in Principle?",
        "How long does it take to get an AIP?",
    ], answers=[
        "An Agreement in Principle is valid for 90 days. It uses a soft credit check and takes about 15 minutes online.",
        "No, an Agreement in Principle only uses a soft credit check, so it doesn't affect your score. It lasts 90 days.",
        "Apply online in around 15 minutes; we run a soft credit check and the Agreement in Principle is valid for 90 days.",
        "Yes, once the 90 days run out you can apply again online in 15 minutes, with another soft credit check.",
        "About 15 minutes online. The AIP uses a soft credit check and stays valid for 90 days.",
    ]),
    # --- branches and contact ------------------------------------------------------------
    dict(key="branch_hours", category="Branches & contact", questions=[
        "What are your branch opening hours?",
        "Are branches open on Saturday?",
        "Can I visit a branch on Sunday?",
        "What time do branches close on weekdays?",
        "When can I go into a Northwind branch?",
    ], answers=[
        "Branches are open 9:00 to 17:00 Monday to Friday and 9:30 to 13:00 on Saturday. They are closed on Sundays and bank holidays.",
        "Yes, on Saturdays branches open from 9:30 to 13:00. Weekday hours are 9:00 to 17:00.",
        "No, branches are closed on Sundays and bank holidays. They open 9:00-17:00 on weekdays and 9:30-13:00 on Saturdays.",
        "Weekdays they close at 17:00, having opened at 9:00. On Saturday it's 9:30 to 13:00.",
        "Monday to Friday from 9:00 to 17:00, or Saturday from 9:30 to 13:00; all branches are shut on Sundays and bank holidays.",
    ]),
    dict(key="kingsport_branch", category="Branches & contact", questions=[
        "Which branch has late opening?",
        "What time does the Kingsport branch close on Thursday?",
        "Where is your flagship branch?",
        "Is any branch open in the evening?",
        "Where can I meet a mortgage adviser in person?",
    ], answers=[
        "Our flagship branch at 14 Harbour Row, Kingsport stays open until 19:00 on Thursdays.",
        "On Thursdays the Kingsport branch closes at 19:00 instead of 17:00. It is at 14 Harbour Row.",
        "The flagship branch is at 14 Harbour Row, Kingsport. It has late opening until 19:00 every Thursday and a Mortgage Studio.",
        "Yes, 14 Harbour Row in Kingsport is open until 19:00 on Thursdays. All other branches close at 17:00.",
        "Visit the Mortgage Studio at our flagship branch, 14 Harbour Row, Kingsport, which is open until 19:00 on Thursdays.",
    ]),
    dict(key="contact_hours", category="Branches & contact", questions=[
        "What are the telephone banking hours?",
        "When is live chat available in the app?",
        "Can I call Northwind on a Sunday?",
        "Until what time can I speak to someone in the evening?",
        "How late is the support chat open?",
    ], answers=[
        "Telephone banking is open 8:00 to 20:00, seven days a week. In-app chat runs from 7:00 to 23:00 every day.",
        "In-app live chat is staffed from 7:00 to 23:00 daily, and phone lines are open 8:00-20:00 seven days a week.",
        "Yes, our phone lines are open 8:00 to 20:00 on Sundays too, as on every day. Live chat runs 7:00-23:00.",
        "Phone lines close at 20:00, but the in-app chat is available until 23:00, every day of the week.",
        "Chat in the app is open until 23:00, starting at 7:00 each day. Phone banking runs 8:00-20:00.",
    ]),
    dict(key="complaints", category="Branches & contact", questions=[
        "How do I make a complaint?",
        "How long do you take to respond to a complaint?",
        "What is a CMP reference?",
        "When will I hear back about my complaint?",
        "What's the complaints timeline at Northwind Ledger Bank?",
    ], answers=[
        "Complain in the app, by phone or in branch. We acknowledge within 3 working days with a CMP- reference and send a final response within 8 weeks.",
        "We acknowledge complaints within 3 working days and give a final response within 8 weeks.",
        "A CMP- reference, such as CMP-00731254, is the number we give your complaint when we acknowledge it within 3 working days.",
        "You'll get an acknowledgement with a CMP- reference within 3 working days, and our final response within 8 weeks.",
        "Acknowledgement within 3 working days, then a final response no later than 8 weeks after you complained.",
    ]),
    # --- account services (forms) --------------------------------------------------------
    dict(key="change_address", category="Account services", questions=[
        "How do I change my address?",
        "I've moved house. How do I update my details?",
        "Which form changes my postal address?",
        "How long does an address change take to go through?",
        "Can I update my address without going to a branch?",
    ], answers=[
        "Update it in the app under Profile > Address, or send Form NL-12. The change is applied within 2 working days.",
        "Go to Profile > Address in the app, or complete Form NL-12; we update our records within 2 working days.",
        "Form NL-12 is the Change of Address form. You can also make the change in the app, and it takes 2 working days.",
        "Address changes are applied within 2 working days, whether you use the app or Form NL-12.",
        "Yes, change it in the app under Profile > Address or post Form NL-12; it takes effect within 2 working days.",
    ]),
    dict(key="change_name", category="Account services", questions=[
        "How do I change my name on my account?",
        "I got married. How do I update my surname?",
        "What documents do I need for a name change?",
        "Which form is used for changing my name?",
        "How long does a name change take?",
    ], answers=[
        "Bring Form NL-14 and your original or certified marriage certificate or deed poll to a branch. The change takes 5 working days.",
        "Complete Form NL-14 and take your marriage certificate (original or certified copy) to any branch; we update your name in 5 working days.",
        "We need Form NL-14 plus an original or certified copy of your marriage certificate or deed poll, shown in branch.",
        "Name changes use Form NL-14, submitted in branch with an original or certified marriage certificate or deed poll.",
        "It takes 5 working days after you hand in Form NL-14 and your supporting document at a branch.",
    ]),
    dict(key="power_of_attorney", category="Account services", questions=[
        "How do I register a power of attorney?",
        "What form do I need to act on behalf of my father?",
        "How long does a power of attorney registration take?",
        "Do you need the original power of attorney document?",
        "My mother can't manage her account anymore. What do I do?",
    ], answers=[
        "Send Form NL-40 with a certified copy of the power of attorney. We register it within 10 working days.",
        "Use Form NL-40 together with a certified copy of the power of attorney; registration takes up to 10 working days.",
        "We register a power of attorney within 10 working days of receiving Form NL-40 and a certified copy of the document.",
        "No, a certified copy is fine. Send it with Form NL-40 and we register it within 10 working days.",
        "If you hold a power of attorney for her, complete Form NL-40 and include a certified copy; registration takes 10 working days.",
    ]),
    dict(key="bereavement", category="Account services", questions=[
        "How do I tell you about a customer who has died?",
        "Can you release money without probate?",
        "Which form is used after a bereavement?",
        "How much can be paid out from a deceased person's account before probate?",
        "My husband passed away. How do I deal with his account?",
    ], answers=[
        "Contact our Bereavement Support Team and complete Form NL-55. We can release up to £50,000 without a grant of probate.",
        "Yes, up to £50,000 can be released without a grant of probate, once Form NL-55 is completed.",
        "Form NL-55 is used to notify a death. Our Bereavement Support Team will help, and up to £50,000 can be paid out without probate.",
        "Up to £50,000 can be paid from a deceased customer's accounts before probate is granted.",
        "I'm very sorry. Our Bereavement Support Team will guide you; complete Form NL-55, and up to £50,000 can be released without probate.",
    ]),
]

# ----------------------------------------------------------------------------- extras
# Additional paraphrases with special features (still valid training material).
REAL_INPUT_RECORDS = [  # alpaca records whose `input` carries the account type
    dict(key="ledger_plus", instruction="What is the monthly fee for this account, and what does it include?",
         input="Account type: Ledger Plus Account",
         output="This account costs £12 a month. It includes worldwide travel insurance up to age 79 and mobile phone insurance with a £75 excess."),
    dict(key="atm_limit", instruction="What daily ATM withdrawal limit applies to this customer?",
         input="Account: Everyday Current Account with a Classic Debit Card",
         output="With the Classic Debit Card this customer can withdraw up to £500 a day from cash machines; only Ledger Plus holders get £1,000."),
]
EMAIL_RECORD = dict(  # alpaca: answer contains a customer email address (PII)
    key="change_address", instruction="Reply to a customer who moved house and asked for the address form by email.",
    input="",
    output="We have emailed Form NL-12 to jane.doe@example.com. You can also update your address in the app under Profile > Address; changes take 2 working days.")
PHONE_PAIR = dict(  # chat: agent turn contains a phone number (PII)
    key="mortgage_overpayment", question="Could someone call me back about overpaying my mortgage?",
    answer="I've booked a callback to +44 20 7946 0958 for tomorrow. Meanwhile: you can overpay up to 10% of your balance each year free; above that a 3% early repayment charge applies.")

PLACEHOLDER_INPUTS = ["<noinput>", "N/A", "No input", "<noinput>", "N/A"]

# Near duplicates: (fact key, pair index, target file, field, [(old, new), ...]) - one or two words changed.
NEAR_DUPLICATES = [
    ("lantern_points", 0, "faq", "answer", [("every £1 you spend", "each £1 you spend")]),
    ("onyx_card", 1, "faq", "answer", [("It has", "It carries")]),
    ("replacement_card", 3, "faq", "answer", [("Freeze the card", "Freeze your card")]),
    ("balance_transfer", 2, "jsonl", "answer", [("Moving a balance", "Transferring a balance")]),
    ("ledger_plus", 0, "jsonl", "answer", [("costs £12 a month", "costs £12 per month")]),
    ("open_account", 3, "jsonl", "answer", [("You'll also need", "You will also need")]),
]
# Exact duplicates: (fact key, pair index, target file, variant) with variant in verbatim/lower/space.
EXACT_DUPLICATES = [
    ("gold_annual_fee", 0, "faq", "verbatim"),
    ("chaps", 1, "faq", "lower"),
    ("swift", 0, "faq", "space"),
    ("harbour_saver", 0, "jsonl", "verbatim"),
    ("contactless_limit", 1, "jsonl", "lower"),
    ("keystone_mortgage", 0, "jsonl", "space"),
]
EMPTY_OUTPUTS = [  # (file, question, answer)
    ("faq", "Can I have more than one Ledger Plus Account?", ""),
    ("jsonl", "Explain the fee for a replacement PIN.", ""),
    ("jsonl", "Summarise the Lighthouse Bond maturity options.", "   "),
]
SHORT_OUTPUTS = [
    ("faq", "Is the Everyday Current Account available to joint applicants?", "Yes, it is."),
    ("jsonl", "Where can I find Form NL-12?", "On our website."),
]
MALFORMED_JSONL = [
    '{"instruction": "How long does a CHAPS payment take to arrive?", "input": "", "output": "CHAPS paym',
    '"Note to annotators: rates below were checked on 2024-02-01"',
    '{"instruction": "What is the minimum age for a Junior Saver?", "input": ""}',
]
UNKNOWN_ROLE_SESSION = [
    ("customer", "I was charged a £12 late fee but I paid on the due date. Can you refund it?"),
    ("agent", "I can see the payment arrived on the due date. Let me get approval for a refund."),
    ("supervisor", "Approved. Refund the £12 late payment fee as a goodwill gesture."),
    ("agent", "Done: the £12 late payment fee has been refunded and will show on your next statement."),
]
CUSTOMER_LAST_SESSION = [
    ("customer", "Hi, how do I order a new cheque book?"),
    ("agent", "You can order one in the app under Account Services. It's free and arrives within 7 working days."),
    ("customer", "Thanks. And can I also order one for my business account the same way?"),
]
GREETINGS = [
    ("Hi", "Hello, you're chatting with Northwind Ledger Bank. How can I help today?"),
    ("Hello, I have a question", "Hi there, thanks for contacting Northwind Ledger Bank. What would you like to know?"),
    ("hey", "Good day, this is Northwind Ledger Bank support. How can I help?"),
]
SYSTEM_TURNS = [
    "Chat started from the Northwind app. Customer verified with Ledger Key.",
    "Conversation transferred from the chatbot to a support agent.",
]
EXPECTED_DEFECTS = {
    "exact_duplicates": 6, "near_duplicates": 6, "empty_outputs": 3, "placeholder_inputs": 5,
    "malformed_jsonl_lines": 3, "short_outputs": 2, "emails": 1, "phones": 1,
    "unknown_role_sessions": 1, "sessions_ending_on_customer": 1,
}

CHAT_OPENERS = ["", "", "", "Quick question. ", "Hello. ", "Hi, "]


# ----------------------------------------------------------------------------- build
def check_facts(facts: list[dict]) -> None:
    """Raise ValueError when a fact is malformed: duplicate key, < 5 pairs, answer outside 40-300 chars."""
    seen = set()
    for fact in facts:
        key, qs, ans = fact["key"], fact["questions"], fact["answers"]
        if key in seen:
            raise ValueError(f"duplicate fact key {key!r}")
        seen.add(key)
        if len(qs) != len(ans) or len(qs) < 5:
            raise ValueError(f"fact {key!r}: need >= 5 question/answer pairs of equal count")
        for text in ans:
            if not 40 <= len(text) <= 300:
                raise ValueError(f"fact {key!r}: answer of {len(text)} chars outside 40-300: {text!r}")


def build(seed: int = SEED) -> dict:
    """Build every raw record in memory (nothing written).

    Returns:
        {"faq": [row dict], "jsonl": [(line str, meta dict)], "chats": [session dict]}; each row,
        line and session carries ``meta`` = {"fact": key or None, "pair": index or None, "kind": str}.
    """
    check_facts(FACTS)
    rng = random.Random(seed)
    by_key = {f["key"]: f for f in FACTS}
    faq: list[dict] = []
    jsonl: list[tuple[str, dict]] = []
    chat_pairs: list[tuple[str, int]] = []

    def faq_row(q, a, cat, fact, pair, kind):
        faq.append(dict(question=q, answer=a, category=cat, meta=dict(fact=fact, pair=pair, kind=kind)))

    def alpaca(instr, inp, out, fact, pair, kind):
        line = json.dumps({"instruction": instr, "input": inp, "output": out}, ensure_ascii=False)
        jsonl.append((line, dict(fact=fact, pair=pair, kind=kind)))

    # 1. distribute each fact's paraphrase pairs over the three files
    for fi, fact in enumerate(FACTS):
        slots = ["faq", "faq", "jsonl", "jsonl", "chat"] + ["jsonl"] * (len(fact["questions"]) - 5)
        if fi % 5 == 4:
            slots[3] = "chat"
        order = list(range(len(fact["questions"])))
        rng.shuffle(order)
        for slot, i in zip(slots, order):
            q, a = fact["questions"][i], fact["answers"][i]
            if slot == "faq":
                faq_row(q, a, fact["category"], fact["key"], i, "pair")
            elif slot == "jsonl":
                alpaca(q, "", a, fact["key"], i, "pair")
            else:
                chat_pairs.append((fact["key"], i))

    # 2. placeholder inputs on five plain alpaca records
    plain = [n for n, (_, m) in enumerate(jsonl) if m["kind"] == "pair"]
    for n, placeholder in zip(rng.sample(plain, len(PLACEHOLDER_INPUTS)), PLACEHOLDER_INPUTS):
        obj = json.loads(jsonl[n][0])
        obj["input"] = placeholder
        jsonl[n] = (json.dumps(obj, ensure_ascii=False), dict(jsonl[n][1], kind="placeholder_input"))

    # 3. extra valid records: real inputs, an email address
    for r in REAL_INPUT_RECORDS:
        alpaca(r["instruction"], r["input"], r["output"], r["key"], None, "real_input")
    alpaca(EMAIL_RECORD["instruction"], "", EMAIL_RECORD["output"], EMAIL_RECORD["key"], None, "email")

    # 4. defects: exact and near duplicates, empty and short outputs, malformed lines
    for key, i, target, variant in EXACT_DUPLICATES:
        q, a = by_key[key]["questions"][i], by_key[key]["answers"][i]
        if variant == "lower":
            q = q.lower()
        elif variant == "space":
            words = q.split(" ")
            q, a = " ".join(words[:2]) + "  " + " ".join(words[2:]) + " ", a + "  "
        if target == "faq":
            faq_row(q, a, by_key[key]["category"], key, i, "exact_duplicate")
        else:
            alpaca(q, "", a, key, i, "exact_duplicate")
    for key, i, target, field, edits in NEAR_DUPLICATES:
        q, a = by_key[key]["questions"][i], by_key[key]["answers"][i]
        for old, new in edits:
            if field == "question":
                assert old in q, (key, old)
                q = q.replace(old, new)
            else:
                assert old in a, (key, old)
                a = a.replace(old, new)
        if target == "faq":
            faq_row(q, a, by_key[key]["category"], key, i, "near_duplicate")
        else:
            alpaca(q, "", a, key, i, "near_duplicate")
    for kind, records in (("empty_output", EMPTY_OUTPUTS), ("short_output", SHORT_OUTPUTS)):
        for target, q, a in records:
            if target == "faq":
                faq_row(q, a, "Accounts", None, None, kind)
            else:
                alpaca(q, "", a, None, None, kind)
    for line in MALFORMED_JSONL:
        jsonl.append((line, dict(fact=None, pair=None, kind="malformed")))

    # 5. chat sessions: 1 or 2 exchanges (same category), optional greeting or system turn
    rng.shuffle(chat_pairs)
    chat_pairs.sort(key=lambda p: by_key[p[0]]["category"])
    exchanges: list[list[tuple[str, int]]] = []
    k = 0
    while k < len(chat_pairs):
        nxt = chat_pairs[k + 1] if k + 1 < len(chat_pairs) else None
        if (nxt and nxt[0] != chat_pairs[k][0] and rng.random() < 0.3
                and by_key[nxt[0]]["category"] == by_key[chat_pairs[k][0]]["category"]):
            exchanges.append([chat_pairs[k], nxt])
            k += 2
        else:
            exchanges.append([chat_pairs[k]])
            k += 1
    sessions = []
    system_ids = set(rng.sample(range(len(exchanges)), 4))
    for n, pairs in enumerate(exchanges):
        turns = []
        if n in system_ids:
            turns.append(("system", rng.choice(SYSTEM_TURNS)))
        elif rng.random() < 0.25:
            turns += list(zip(("customer", "agent"), rng.choice(GREETINGS)))
        for key, i in pairs:
            turns.append(("customer", rng.choice(CHAT_OPENERS) + by_key[key]["questions"][i]))
            turns.append(("agent", by_key[key]["answers"][i]))
        sessions.append(dict(turns=turns, meta=dict(fact=[p[0] for p in pairs], pair=[p[1] for p in pairs],
                                                    kind="pair")))
    sessions.append(dict(turns=[("customer", PHONE_PAIR["question"]), ("agent", PHONE_PAIR["answer"])],
                         meta=dict(fact=[PHONE_PAIR["key"]], pair=[None], kind="phone")))
    sessions.append(dict(turns=UNKNOWN_ROLE_SESSION, meta=dict(fact=[], pair=[], kind="unknown_role")))
    sessions.append(dict(turns=CUSTOMER_LAST_SESSION, meta=dict(fact=[], pair=[], kind="customer_last")))
    rng.shuffle(sessions)
    clock = datetime(2024, 3, 4, 8, 0, tzinfo=timezone.utc)
    sid = 104200
    for s in sessions:
        clock += timedelta(minutes=rng.randint(7, 95))
        sid += rng.randint(1, 9)
        s["session_id"] = f"CS-{sid}"
        t, stamped = clock, []
        for role, text in s["turns"]:
            stamped.append((role, text, t.strftime("%Y-%m-%dT%H:%M:%SZ")))
            t += timedelta(seconds=rng.randint(15, 140))
        s["turns"] = stamped

    rng.shuffle(faq)
    rng.shuffle(jsonl)
    return {"faq": faq, "jsonl": jsonl, "chats": sessions}


# ----------------------------------------------------------------------------- write
def write(data: dict, out_dir: Path = OUT_DIR) -> dict[str, Path]:
    """Write the three raw files (UTF-8, no BOM, LF line ends); return {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {n: out_dir / n for n in ("faq.csv", "qa_annotated.jsonl", "support_chats.csv")}
    with paths["faq.csv"].open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["question", "answer", "category"])
        w.writerows([r["question"], r["answer"], r["category"]] for r in data["faq"])
    paths["qa_annotated.jsonl"].write_text("".join(line + "\n" for line, _ in data["jsonl"]), encoding="utf-8")
    with paths["support_chats.csv"].open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["session_id", "role", "text", "timestamp"])
        for s in data["chats"]:
            w.writerows([s["session_id"], role, text, ts] for role, text, ts in s["turns"])
    return paths


def count_defects(data: dict) -> dict[str, int]:
    """Count the deliberate defects by inspecting the built records (not the specs)."""
    import re
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    phone = re.compile(r"\+\d{1,3}(?:[ -]?\d{2,4}){2,4}")
    outputs, c = [], Counter()
    for r in data["faq"]:
        outputs.append(r["answer"])
        c[r["meta"]["kind"]] += 1
    for line, meta in data["jsonl"]:
        c[meta["kind"]] += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            c["malformed_jsonl_lines"] += 1
            continue
        if not isinstance(obj, dict) or "output" not in obj:
            c["malformed_jsonl_lines"] += 1
            continue
        outputs.append(obj["output"])
        c["placeholder_inputs"] += obj["input"].strip().lower() in {"<noinput>", "n/a", "no input"}
    for s in data["chats"]:
        roles = [t[0] for t in s["turns"]]
        outputs += [t[1] for t in s["turns"] if t[0] == "agent"]
        c["unknown_role_sessions"] += any(r not in {"customer", "agent", "system"} for r in roles)
        c["sessions_ending_on_customer"] += roles[-1] == "customer"
    return {
        "exact_duplicates": c["exact_duplicate"], "near_duplicates": c["near_duplicate"],
        "empty_outputs": sum(not o.strip() for o in outputs),
        "placeholder_inputs": c["placeholder_inputs"], "malformed_jsonl_lines": c["malformed_jsonl_lines"],
        "short_outputs": sum(0 < len(o.strip()) < 20 for o in outputs),
        "emails": sum(bool(email.search(o)) for o in outputs),
        "phones": sum(bool(phone.search(o)) for o in outputs),
        "unknown_role_sessions": c["unknown_role_sessions"],
        "sessions_ending_on_customer": c["sessions_ending_on_customer"],
    }


def main() -> None:
    data = build(SEED)
    defects = count_defects(data)
    if defects != EXPECTED_DEFECTS:
        raise SystemExit(f"defect counts {defects} differ from EXPECTED_DEFECTS {EXPECTED_DEFECTS}")
    paths = write(data)
    turns = sum(len(s["turns"]) for s in data["chats"])
    print(f"facts: {len(FACTS)}, paraphrase pairs: {sum(len(f['questions']) for f in FACTS)}")
    print(f"{paths['faq.csv']}: {len(data['faq'])} rows")
    print(f"{paths['qa_annotated.jsonl']}: {len(data['jsonl'])} lines")
    print(f"{paths['support_chats.csv']}: {len(data['chats'])} sessions, {turns} turns")
    print(f"raw records: {len(data['faq']) + len(data['jsonl']) + len(data['chats'])}")
    for name, n in defects.items():
        print(f"  defect {name}: {n}")


if __name__ == "__main__":
    main()
